"""SFT on the tiny model: loss masking, formatting, lr schedule, packing isolation, training, resume."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bft.config.schema import PeftConfig, SFTStageConfig, TrainerConfig
from bft.models.registry import load_model, load_tokenizer, resolve_model_path
from bft.prompts import render_chat
from bft.sft import TrainResult, train_sft
from bft.sft.compile import can_compile, compile_decoder_layers
from bft.sft.data import (
    IGNORE_INDEX,
    collate_packed,
    collate_padded,
    encode_example,
    encode_examples,
    length_grouped_batches,
    pack_examples,
)
from bft.sft.schedule import lr_lambda
from bft.sft.train import compile_decision, planned_tokens

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)

EXAMPLES = [
    {"prompt": f"Question {i}: what is {i} plus {i}?", "completion": f"The answer is {2 * i}. " * (1 + i % 3)} for i in range(8)
]
TRAINER = TrainerConfig(accelerator="cpu", enable_progress_bar=False, checkpoint_every_n_steps=2)
STAGE = SFTStageConfig(lr=1e-2, warmup_ratio=0.0, max_steps=4, batch_size=4, micro_batch_size=2, max_seq_len=128)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny")


def test_loss_masking_covers_completion_and_end_of_turn(tokenizer):
    item = encode_example(tokenizer, "Say hi.", "Hi there!", max_seq_len=256)
    prompt_text, completion_text = render_chat(tokenizer, "Say hi.", "Hi there!")
    n_prompt = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    assert item.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert item.labels[n_prompt:] == item.input_ids[n_prompt:]
    trained = tokenizer.decode(item.input_ids[n_prompt:])
    assert trained == completion_text and "Hi there!" in trained
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn in item.labels[n_prompt:]


def test_training_prompt_equals_inference_prompt(tokenizer):
    for example in EXAMPLES[:3]:
        item = encode_example(tokenizer, example["prompt"], example["completion"], max_seq_len=256)
        inference_prompt, completion = render_chat(tokenizer, example["prompt"], assistant=None)
        assert completion == ""
        prompt_ids = tokenizer(inference_prompt, add_special_tokens=False)["input_ids"]
        assert item.input_ids[: len(prompt_ids)] == prompt_ids
        assert all(label == IGNORE_INDEX for label in item.labels[: len(prompt_ids)])
        assert item.labels[len(prompt_ids)] != IGNORE_INDEX


def test_long_prompts_dropped_and_completions_truncated(tokenizer):
    n_prompt = len(encode_example(tokenizer, "short", "x", 512).labels) - 2
    long_prompt = {"prompt": "word " * 200, "completion": "ok"}
    long_completion = {"prompt": "short", "completion": "word " * 200}
    encoded, stats = encode_examples(tokenizer, [long_prompt, long_completion], max_seq_len=n_prompt + 10)
    assert stats.n_dropped_long_prompt == 1 and stats.n_kept == 1 and stats.n_truncated == 1
    assert len(encoded[0]) == n_prompt + 10


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lr_schedule_ends_at_floor_ratio(schedule):
    steps, warmup = 100, 5
    values = [lr_lambda(s, steps, warmup, schedule, 0.9) for s in range(steps)]
    assert values[0] == pytest.approx(1 / warmup)
    assert values[warmup] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.9)  # Humpback: 1e-5 -> 9e-6, a ratio, not ~0
    assert min(values[warmup:]) == pytest.approx(0.9)
    assert all(a >= b - 1e-12 for a, b in zip(values[warmup:], values[warmup + 1 :], strict=False))
    assert lr_lambda(steps + 10, steps, warmup, schedule, 0.9) == pytest.approx(0.9)
    assert lr_lambda(steps - 1, steps, 0, schedule, 0.1) == pytest.approx(0.1)


def test_lr_schedule_constant_and_bad_values():
    assert lr_lambda(50, 100, 0, "constant", 0.1) == 1.0
    with pytest.raises(ValueError):
        lr_lambda(0, 10, 0, "step", 0.1)
    with pytest.raises(ValueError):
        lr_lambda(0, 10, 0, "linear", 9e-6 * 1e6)


def test_length_grouping_and_packing_cover_every_example():
    lengths = [((i * 37) % 100) + 1 for i in range(230)]
    batches = length_grouped_batches(lengths, batch_size=4, seed=3, megabatch_factor=5)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(230))
    assert batches == length_grouped_batches(lengths, batch_size=4, seed=3, megabatch_factor=5)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 15  # similar lengths together: little padding
    rows = pack_examples(lengths, max_len=128, seed=0)
    assert sorted(i for r in rows for i in r) == list(range(230))
    assert all(sum(lengths[i] for i in r) <= 128 for r in rows)
    assert len(rows) <= math.ceil(sum(lengths) / 128) + 2  # close to the ideal fill


def _token_losses(model, batch: dict) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], position_ids=batch.get("position_ids"), use_cache=False).logits
    targets = batch["labels"][:, 1:]
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    return losses[targets != IGNORE_INDEX]


@pytest.mark.parametrize("attention", ["sdpa", "eager", "bft_causal_blocks"])  # the model's default, others, cpu.yaml's
def test_packing_has_no_cross_sample_attention(tokenizer, attention):
    import bft.sft.attention  # noqa: F401 - registers bft_causal_blocks

    model = load_model("tiny", dtype="float32").model
    model.set_attn_implementation(attention)
    items = [encode_example(tokenizer, e["prompt"], e["completion"], 256) for e in EXAMPLES[:3]]
    with torch.no_grad():
        separate = torch.cat([_token_losses(model, collate_padded([it], tokenizer.pad_token_id)) for it in items])
        packed_batch = collate_packed([items], tokenizer.pad_token_id)
        packed = _token_losses(model, packed_batch)
        leaky = _token_losses(model, {**packed_batch, "position_ids": None})  # plain causal over the whole row
    assert packed.shape == separate.shape
    torch.testing.assert_close(packed, separate, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(leaky, separate, atol=1e-3)  # the check can see leakage


def _adapter_loss(model, tokenizer, examples=EXAMPLES) -> float:
    items = [encode_example(tokenizer, e["prompt"], e["completion"], 128) for e in examples]
    with torch.no_grad():
        return float(_token_losses(model, collate_padded(items, tokenizer.pad_token_id)).mean())


def test_lora_training_produces_loadable_adapter(tmp_path: Path, tokenizer):
    result = train_sft(EXAMPLES, "tiny", tmp_path / "run", STAGE, PeftConfig(r=8), TRAINER, seed=0)
    assert isinstance(result, TrainResult) and result.is_adapter
    assert (Path(result.model_dir) / "adapter_config.json").exists()
    metrics = result.metrics
    assert metrics["steps"] == 4 and metrics["n_examples"] == 8 and metrics["tokens"] > 0
    assert metrics["tokens_per_s"] > 0 and 0 < metrics["trainable_params"] < 1e6
    base = load_model("tiny", dtype="float32").model
    tuned = load_model("tiny", dtype="float32", adapter=result.model_dir).model
    changed = any(not torch.equal(a, b) for a, b in zip(base.parameters(), tuned.parameters(), strict=True))
    assert changed
    assert _adapter_loss(tuned, tokenizer) < _adapter_loss(base, tokenizer)


def test_full_finetuning_saves_a_loadable_model(tmp_path: Path):
    stage = replace(STAGE, max_steps=2, lr=1e-3, grouping="none")
    result = train_sft(EXAMPLES, "tiny", tmp_path / "run", stage, PeftConfig(method="full"), TRAINER, seed=0)
    assert not result.is_adapter
    loaded = load_model(result.model_dir, dtype="float32")
    assert loaded.model.config.attention_dropout == 0.0  # training dropout is not saved into the config
    assert resolve_model_path(result.model_dir) == str(Path(result.model_dir).resolve())


def test_resume_continues_from_last_checkpoint(tmp_path: Path):
    out = tmp_path / "run"
    stage = replace(STAGE, grouping="packing")
    first = train_sft(EXAMPLES, "tiny", out, stage, PeftConfig(r=8), TRAINER, seed=0)
    assert first.metrics["steps"] == 4 and first.metrics["resumed_from_step"] == 0
    last = out / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 4
    second = train_sft(EXAMPLES, "tiny", out, replace(stage, max_steps=6), PeftConfig(r=8), TRAINER, seed=0)
    assert second.metrics["resumed_from_step"] == 4
    assert second.metrics["steps"] == 6
    assert torch.load(last, weights_only=False)["global_step"] == 6


def test_empty_examples_raise_clear_error(tmp_path: Path):
    with pytest.raises(ValueError, match="no training examples"):
        train_sft([], "tiny", tmp_path / "run", STAGE, PeftConfig(), TRAINER, seed=0)


def test_residual_dropout_only_in_training_mode():
    from bft.sft.module import SFTModule

    module = SFTModule("tiny", replace(STAGE, dropout=0.5), PeftConfig(r=4), attention="eager")
    module.configure_model()
    assert module.residual_dropout_layers == 2
    assert module._causal_lm().config._attn_implementation == "eager"
    batch = {"input_ids": torch.arange(10, 30).unsqueeze(0), "labels": torch.arange(10, 30).unsqueeze(0)}
    with torch.no_grad():
        assert module.compute_loss(batch) != module.compute_loss(batch)
        module.eval()
        assert module.compute_loss(batch) == module.compute_loss(batch)


def test_fast_dropout_rate_scale_and_gradient():
    from bft.sft.dropout import fast_dropout

    torch.manual_seed(0)
    out = fast_dropout(torch.ones(200_000), 0.1)
    assert abs(float((out == 0).float().mean()) - 0.1) < 0.005
    assert abs(float(out.mean()) - 1.0) < 0.01
    x = torch.ones(1000, requires_grad=True)
    fast_dropout(x, 0.5).sum().backward()
    assert set(x.grad.unique().tolist()) == {0.0, 2.0}
    assert fast_dropout(x, 0.5, training=False) is x


def test_uncast_adapter_inputs_under_autocast_give_the_same_loss_and_float32_grads(tokenizer):
    from bft.sft.module import SFTModule

    stage = replace(STAGE, dropout=0.0)
    peft = PeftConfig(dropout=0.0)
    item = encode_example(tokenizer, EXAMPLES[1]["prompt"], EXAMPLES[1]["completion"], max_seq_len=128)
    batch = {"input_ids": torch.tensor([item.input_ids]), "labels": torch.tensor([item.labels])}
    losses, grads = [], []
    for mixed in (False, True):
        torch.manual_seed(0)  # same LoRA initialisation
        module = SFTModule("tiny", stage, peft, frozen_dtype=torch.bfloat16, mixed_precision=mixed)
        module.configure_model()
        lora_b = [p for n, p in module.model.named_parameters() if "lora_B" in n][0]
        casts = {m.cast_input_dtype_enabled for m in module.model.modules() if hasattr(m, "cast_input_dtype_enabled")}
        assert casts == {not mixed}
        with torch.no_grad():  # LoRA starts with B = 0; make the adapter path matter
            for name, param in module.model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.02)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = module.compute_loss(batch)
        loss.backward()
        assert lora_b.dtype == torch.float32 and lora_b.grad.dtype == torch.float32 and lora_b.grad.abs().sum() > 0
        losses.append(float(loss))
        grads.append(lora_b.grad.clone())
    assert math.isclose(losses[0], losses[1], rel_tol=2e-2)
    assert F.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0) > 0.98


def test_causal_blocks_attention_equals_eager_on_packed_and_padded_rows(tokenizer):
    import bft.sft.attention  # noqa: F401 - registers bft_causal_blocks

    model = load_model("tiny", dtype="float32").model
    items = [encode_example(tokenizer, e["prompt"], e["completion"], 128) for e in EXAMPLES[:5]]
    batches = [collate_packed([items[:3], items[3:]], tokenizer.pad_token_id), collate_padded(items, tokenizer.pad_token_id)]
    for batch in batches:
        model.set_attn_implementation("eager")
        eager = model(input_ids=batch["input_ids"], position_ids=batch.get("position_ids")).logits
        model.set_attn_implementation("bft_causal_blocks")
        blocks = model(input_ids=batch["input_ids"], position_ids=batch.get("position_ids")).logits
        assert batch["input_ids"].shape[1] % 4 != 0  # the last query block is shorter than the others
        torch.testing.assert_close(blocks, eager, atol=1e-4, rtol=1e-4)


# Examples of one token length (59), packed two to a row: every micro-batch of train_sft is 2 rows of 118 tokens, so
# its layers compile once. The module test below compiles that graph first (its first batch is such a micro-batch, with
# train_sft's settings), then recompiles with dynamic shapes for padded rows; train_sft then finds its graph in
# inductor's cache. On a cold cache each compile takes 10-20 s here: the three compile tests took 92 CPU-s when
# train_sft compiled graphs of its own, 58 now.
SAME_LENGTH_EXAMPLES = [
    {"prompt": f"Question {i}: what is {i} plus {i}?", "completion": f"The answer is {2 * i:02d}. " * 2} for i in range(8)
]
COMPILE_STAGE, COMPILE_PEFT = replace(STAGE, dropout=0.0, grouping="packing"), PeftConfig(dropout=0.0)


def test_compiled_training_gives_the_eager_loss_and_gradients(tokenizer):
    from bft.sft.module import SFTModule

    if (reason := can_compile("cpu")) is not None:
        pytest.skip(reason)
    stage, peft = COMPILE_STAGE, COMPILE_PEFT
    same = [encode_example(tokenizer, e["prompt"], e["completion"], 128) for e in SAME_LENGTH_EXAMPLES[:4]]
    items = [encode_example(tokenizer, e["prompt"], e["completion"], 128) for e in EXAMPLES[:3]]
    pad = tokenizer.pad_token_id
    batches = [collate_packed([same[:2], same[2:]], pad), collate_padded(items, pad)]
    assert (batches[1]["labels"][:, -1] == IGNORE_INDEX).any()  # padded rows
    results = {}
    for compiled in (False, True):
        torch.manual_seed(0)  # same LoRA initialisation
        module = SFTModule("tiny", stage, peft, frozen_dtype=torch.bfloat16, mixed_precision=True, compile=compiled)
        module.configure_model()
        assert module.compiled_layers == (len(module._causal_lm().model.layers) if compiled else 0)
        with torch.no_grad():  # LoRA starts with B = 0; make the adapter path matter
            for name, param in module.model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.02)
        for i, batch in enumerate(batches):  # packed rows (position_ids), then padded rows of another length
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = module.compute_loss(batch)
            loss.backward()
            grad = torch.cat([p.grad.flatten() for p in module.model.parameters() if p.requires_grad])
            module.model.zero_grad()
            results[compiled, i] = (float(loss), grad)
        results[compiled, "keys"] = sorted(module.model.state_dict())
    assert results[False, "keys"] == results[True, "keys"]  # checkpoints and adapters see the same names
    for i in range(len(batches)):
        (eager_loss, eager_grad), (compiled_loss, compiled_grad) = results[False, i], results[True, i]
        assert math.isclose(eager_loss, compiled_loss, rel_tol=1e-2)
        assert F.cosine_similarity(eager_grad, compiled_grad, dim=0) > 0.99


def test_compiled_training_saves_a_loadable_adapter(tmp_path: Path, tokenizer):
    if (reason := can_compile("cpu")) is not None:
        pytest.skip(reason)
    encoded, _ = encode_examples(tokenizer, SAME_LENGTH_EXAMPLES, STAGE.max_seq_len)
    assert len({len(e) for e in encoded}) == 1
    trainer = replace(TRAINER, compile=True)
    result = train_sft(SAME_LENGTH_EXAMPLES, "tiny", tmp_path / "run", COMPILE_STAGE, COMPILE_PEFT, trainer, seed=0)
    assert result.metrics["compiled_layers"] > 0 and result.metrics["steady_tokens_per_s"] > 0
    tuned = load_model("tiny", dtype="float32", adapter=result.model_dir).model
    base = load_model("tiny", dtype="float32").model
    assert _adapter_loss(tuned, tokenizer, SAME_LENGTH_EXAMPLES) < _adapter_loss(base, tokenizer, SAME_LENGTH_EXAMPLES)


def test_compile_only_for_runs_long_enough_to_pay_for_it(tokenizer):
    encoded, _ = encode_examples(tokenizer, EXAMPLES, 128)
    tokens = planned_tokens(encoded, STAGE)
    mean = sum(len(e) for e in encoded) / len(encoded)
    assert tokens == int(mean * STAGE.batch_size * STAGE.max_steps)
    assert compile_decision(replace(TRAINER, compile=False), tokens) == (False, "trainer.compile=false")
    short, why = compile_decision(replace(TRAINER, compile=True, compile_min_tokens=tokens + 1), tokens)
    assert not short and "compile_min_tokens" in why
    if can_compile("cpu") is None:
        assert compile_decision(replace(TRAINER, compile=True, compile_min_tokens=tokens), tokens)[0]


def test_compile_targets_decoder_layers_else_the_whole_model():
    model = load_model("tiny", dtype="float32").model
    n_layers = len(model.model.layers)
    assert compile_decoder_layers(model) == n_layers
    assert all(layer._compiled_call_impl is not None for layer in model.model.layers)
    assert model._compiled_call_impl is None  # one graph per layer, not one for the model
    plain = torch.nn.Sequential(torch.nn.Linear(4, 4))  # no ``model.layers``
    assert compile_decoder_layers(plain) == 1 and plain._compiled_call_impl is not None


def test_a_failing_compiler_gives_a_one_line_config_error(tmp_path: Path, monkeypatch):
    import bft.sft.module
    from bft.config.validate import ConfigError

    if (reason := can_compile("cpu")) is not None:
        pytest.skip(reason)

    def broken_toolchain(*args):
        raise torch._dynamo.exc.BackendCompilerFailed(broken_toolchain, RuntimeError("cc1plus: not found\nmore"), None)

    monkeypatch.setattr(bft.sft.module, "compiled_head_loss", broken_toolchain)
    trainer = replace(TRAINER, compile=True)  # test_compiled_training_saves_a_loadable_adapter's run: layers cached
    with pytest.raises(ConfigError, match=r"trainer.compile=false") as info:
        train_sft(SAME_LENGTH_EXAMPLES, "tiny", tmp_path / "run", COMPILE_STAGE, COMPILE_PEFT, trainer, seed=0)
    assert "RuntimeError: cc1plus: not found" in str(info.value) and "\n" not in str(info.value)
