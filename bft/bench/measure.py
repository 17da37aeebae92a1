"""The measurements of ``bft-bench``; each returns a plain dict that goes into the JSON report.

FLOP conventions (roofline fractions): generation and scoring cost ``2 * params`` FLOPs per token (one
multiply-add per weight; tied embeddings count once, as the LM head). Full fine-tuning costs ``6 * params`` per
token (forward 2, backward 4). LoRA training is counted as ``4 * params`` per token: the backward pass still
computes activation gradients through every frozen weight (2) but skips their weight gradients (the adapters'
own FLOPs are under 1% at r=16 and are ignored).
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from bft.bench.workload import DEFAULT_CORPUS, documents, pairs, real_documents
from bft.generation.base import BackendStats, Sampling
from bft.generation.hf import HFBackend
from bft.models.registry import load_model
from bft.parsers import parse_score
from bft.prompts import SCORE_PREFILL, backtranslation_prompt, rating_prompt, render_chat

GEN_FLOPS_PER_PARAM = 2
LORA_FLOPS_PER_PARAM = 4


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def matmul_flops(dtype: torch.dtype, size: int = 2048, seconds: float = 2.0) -> float:
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * size**3 * reps / (time.perf_counter() - start)


def _plain_generate_b16(plain, tok, prompts: list[str], **generate_kwargs) -> list[torch.Tensor]:
    """The new token ids of a plain ``model.generate`` loop at batch 16 (left padding), one tensor per batch."""
    tok = copy.copy(tok)  # load_tokenizer's object is shared
    tok.padding_side = "left"
    new_ids = []
    with torch.inference_mode():
        for i in range(0, len(prompts), 16):
            enc = tok(prompts[i : i + 16], add_special_tokens=False, return_tensors="pt", padding=True)
            out = plain.generate(**enc, pad_token_id=tok.pad_token_id, **generate_kwargs)
            new_ids.append(out[:, enc.input_ids.shape[1] :])
    return new_ids


def _plain_generate_fp32(plain, tok, prompts: list[str], new_tokens: int) -> float:
    """New tokens/s of a plain float32 ``model.generate`` loop at batch 16 (greedy, exactly ``new_tokens`` each)."""
    start = time.perf_counter()
    new_ids = _plain_generate_b16(plain, tok, prompts, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    return sum(ids.numel() for ids in new_ids) / (time.perf_counter() - start)


def generation_workloads(
    tok, n_prompts: int, new_tokens: int, corpus: Path | None = DEFAULT_CORPUS
) -> dict[str, tuple[list[str], int]]:
    """Three shapes of the pipeline's generation: a short synthetic document in, a short text out (augmentation,
    like the back-translation prompt); the same on documents with a real corpus's token lengths
    (:func:`bft.bench.workload.real_documents`); and a short instruction in, a long answer out (eval outputs)."""
    docs = documents(n_prompts)
    real, _ = real_documents(n_prompts, tok, corpus)
    return {
        "augment": ([render_chat(tok, backtranslation_prompt(d))[0] for d in docs], new_tokens),
        "augment_real": ([render_chat(tok, backtranslation_prompt(d))[0] for d in real], new_tokens),
        "answer": ([render_chat(tok, instruction)[0] for instruction, _ in pairs(n_prompts)], 2 * new_tokens),
    }


def generation(
    model_name: str,
    n_prompts: int,
    new_tokens: int,
    batch_size: int,
    baseline_prompts: int,
    max_batch_tokens: int | None = None,
    corpus: Path | None = DEFAULT_CORPUS,
) -> dict:
    """bft hf backend vs plain float32 ``model.generate`` at batch 16, per workload; greedy, forced lengths."""
    backend = HFBackend.from_name(model_name, dtype="auto", batch_size=batch_size, max_batch_tokens=max_batch_tokens)
    tok = backend.tokenizer
    plain = load_model(model_name, dtype="float32").model
    params = n_params(plain)  # the backend's packed linear weights are buffers, not parameters
    shapes = generation_workloads(tok, n_prompts, new_tokens, corpus)
    # one-time costs before timing: the first large prefill compiles the fused kernels (bft.generation.cpu_fused)
    start = time.perf_counter()
    backend.generate(shapes["augment_real"][0][:4], Sampling(temperature=0.0, max_new_tokens=2), seed=0)
    warmup_s = time.perf_counter() - start
    workloads = {}
    for name, (prompts, n_new) in shapes.items():
        forced = Sampling(temperature=0.0, max_new_tokens=n_new, min_new_tokens=n_new)
        before = Counter(backend.stats())
        start = time.perf_counter()
        outs = backend.generate(prompts, forced, seed=0)
        bft_tps = sum(o.new_tokens for o in outs) / (time.perf_counter() - start)
        padding = BackendStats()
        padding.counts = Counter(backend.stats()) - before
        base_tps = _plain_generate_fp32(plain, tok, prompts[:baseline_prompts], n_new)
        mean_prompt = sum(o.prompt_tokens for o in outs) / len(outs)
        processed_per_new = (mean_prompt + n_new) / n_new  # tokens through the model per generated token
        workloads[name] = {
            "prompts": len(prompts),
            "mean_prompt_tokens": mean_prompt,
            "new_tokens_each": n_new,
            "bft_tokens_per_s": bft_tps,
            "baseline_prompts": min(baseline_prompts, len(prompts)),
            "baseline_fp32_b16_tokens_per_s": base_tps,
            "speedup": bft_tps / base_tps,
            "bft_flops": bft_tps * GEN_FLOPS_PER_PARAM * params,
            "baseline_flops": base_tps * GEN_FLOPS_PER_PARAM * params,
            # prompt tokens cost 2*params each too: the machine's work, and the bound it puts on new tokens/s
            "processed_tokens_per_new_token": processed_per_new,
            "bft_flops_incl_prompt": bft_tps * processed_per_new * GEN_FLOPS_PER_PARAM * params,
            "baseline_flops_incl_prompt": base_tps * processed_per_new * GEN_FLOPS_PER_PARAM * params,
            **padding.padding(),
        }
    return {
        "dtype": str(next(backend.model.parameters()).dtype).removeprefix("torch."),
        "batch_size": batch_size,
        "max_batch_tokens": max_batch_tokens,
        "real_documents": real_documents(0, tok, corpus)[1],
        "decode_attention": backend.decode_attention,
        "fused_modules": backend.fused_modules,
        "warmup_s": warmup_s,
        "params": params,
        "workloads": workloads,
        "_backend": backend,
        "_plain": plain,
    }


def _plain_sampled_generate_fp32(plain, tok, prompts: list[str], max_new_tokens: int, seed: int) -> list[str]:
    """Texts of a plain float32 ``model.generate`` loop at batch 16, sampling at temperature 1, top-p 0.9."""
    torch.manual_seed(seed)
    new_ids = _plain_generate_b16(plain, tok, prompts, do_sample=True, temperature=1.0, top_p=0.9, max_new_tokens=max_new_tokens)
    return [text for ids in new_ids for text in tok.batch_decode(ids, skip_special_tokens=True)]


def curation(
    backend: HFBackend,
    n_pairs: int,
    n_logprob: int,
    n_samples: int = 4,
    seed: int = 0,
    plain=None,
    corpus: Path | None = DEFAULT_CORPUS,
) -> dict:
    """Pairs rated per second in each scoring mode (generate, generate_n, logprob); with ``plain`` (a float32
    model), also the paper's generate mode through a plain ``model.generate`` loop, the naive implementation."""
    tok = backend.tokenizer
    data = pairs(max(n_pairs, n_logprob))
    sampling = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=96)
    results: dict[str, dict] = {}

    gen_prompts = [render_chat(tok, rating_prompt(i, o))[0] for i, o in data[:n_pairs]]
    start = time.perf_counter()
    outs = backend.generate(gen_prompts, sampling, seed)
    dt = time.perf_counter() - start
    results["generate"] = {
        "pairs": n_pairs,
        "pairs_per_s": n_pairs / dt,
        "new_tokens_per_s": sum(o.new_tokens for o in outs) / dt,
        "parsed": sum(parse_score(o.text) is not None for o in outs) / n_pairs,
        "mean_prompt_tokens": sum(o.prompt_tokens for o in outs) / n_pairs,
    }

    if plain is not None:
        start = time.perf_counter()
        texts = _plain_sampled_generate_fp32(plain, tok, gen_prompts, sampling.max_new_tokens, seed)
        dt = time.perf_counter() - start
        results["generate_plain_fp32"] = {
            "pairs": n_pairs,
            "pairs_per_s": n_pairs / dt,
            "parsed": sum(parse_score(t) is not None for t in texts) / n_pairs,
        }

    rep = [p for p in gen_prompts for _ in range(n_samples)]
    start = time.perf_counter()
    outs = backend.generate(rep, sampling, seed)
    dt = time.perf_counter() - start
    results["generate_n"] = {
        "pairs": n_pairs,
        "n_samples": n_samples,
        "pairs_per_s": n_pairs / dt,
        "new_tokens_per_s": sum(o.new_tokens for o in outs) / dt,
        "parsed": sum(parse_score(o.text) is not None for o in outs) / len(outs),
    }

    results["logprob"] = _logprob(backend, data[:n_logprob])
    real, _ = real_documents(n_logprob, tok, corpus)
    results["logprob_real"] = _logprob(backend, [(instruction, doc) for (instruction, _), doc in zip(data, real, strict=False)])
    results["logprob_vs_generate"] = results["logprob"]["pairs_per_s"] / results["generate"]["pairs_per_s"]
    if plain is not None:
        results["logprob_vs_generate_plain_fp32"] = results["logprob"]["pairs_per_s"] / results["generate_plain_fp32"]["pairs_per_s"]
    return results


def _logprob(backend: HFBackend, data: list[tuple[str, str]]) -> dict:
    """Logprob curation (score-only rubric, ``Score: `` prefilled) of (instruction, output) pairs."""
    tok = backend.tokenizer
    lp_prompts = [render_chat(tok, rating_prompt(i, o, score_only=True), assistant_prefix=SCORE_PREFILL)[0] for i, o in data]
    candidates = ["1", "2", "3", "4", "5"]
    ran_before = backend.stats().get("prefill_tokens", 0)
    start = time.perf_counter()
    logps = backend.next_token_logprobs(lp_prompts, candidates)
    dt = time.perf_counter() - start
    ran = backend.stats().get("prefill_tokens", 0) - ran_before  # the shared rubric prefix counts once
    expected = []
    for row in logps:
        probs = torch.softmax(torch.tensor(row), dim=0)
        expected.append(float((probs * torch.arange(1, 6)).sum()))
    return {
        "pairs": len(data),
        "pairs_per_s": len(data) / dt,
        "prompt_tokens_per_s": sum(len(x) for x in backend._tokenize(lp_prompts)) / dt,
        "tokens_run_per_pair": ran / len(data),
        "tokens_run_per_s": ran / dt,
        "mean_expected_score": sum(expected) / len(expected),
        "candidate_mass": sum(math.exp(v) for row in logps for v in row) / len(logps),
    }


def _sft_examples(model_name: str, n: int) -> list[dict]:
    from bft.models.registry import load_tokenizer

    tok = load_tokenizer(model_name)
    return [
        {"prompt": render_chat(tok, instr)[0], "completion": doc + tok.eos_token}
        for instr, doc in zip([i for i, _ in pairs(n)], documents(n, sentences=48, seed=1), strict=True)
    ]


def sft_bft(model_name: str, steps: int, compile: bool) -> dict:
    """``bft.sft.train.train_sft`` as the pipeline configures it (LoRA r=16 all-linear, no dropout, 512
    tokens, ``conf/sft/local.yaml``'s micro batch of 2, ``conf/trainer/cpu.yaml``'s attention): 4 sequences per
    optimizer step, as the plain loop's batch. ``compile``: as a run past ``trainer.compile_min_tokens`` trains
    (compiled layers and head), else as the embedded default's short stages (eager)."""
    try:
        from bft.config.schema import PeftConfig, SFTStageConfig, TrainerConfig
        from bft.sft.train import train_sft
    except ImportError as err:
        return {"skipped": f"bft.sft.train.train_sft not importable: {err}"}
    stage = SFTStageConfig(  # as conf/sft/local.yaml: no residual dropout
        max_steps=steps, micro_batch_size=2, batch_size=4, max_seq_len=512, warmup_ratio=0.0, dropout=0.0
    )
    trainer = TrainerConfig(  # attention as conf/trainer/cpu.yaml sets it
        enable_progress_bar=False,
        checkpoint_every_n_steps=0,
        log_every_n_steps=1,
        attention="bft_causal_blocks",
        compile=compile,
        compile_min_tokens=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = train_sft(_sft_examples(model_name, 4 * steps), model_name, Path(tmp), stage, PeftConfig(), trainer, seed=0)
        except Exception as err:  # noqa: BLE001 - another module's failure is reported, not fatal to the bench
            return {"skipped": f"train_sft failed: {type(err).__name__}: {err}"}
    m = result.metrics
    return {  # steady: after the first optimizer step (compilation, warm-up), as the plain loop is timed
        "tokens_per_s": m["steady_tokens_per_s"],
        "tokens_per_s_incl_first_step": m["tokens_per_s"],
        "compiled": bool(m["compiled_layers"]),
        "precision": result.precision,  # as trained: float32 where bf16 is not native
        "metrics": m,
    }


def sft_plain(model_name: str, steps: int, micro_batch: int = 4, seq_len: int = 512) -> dict:
    """Baseline: padded float32 LoRA loop (peft r=16 all-linear, no adapter dropout as in conf/peft/lora.yaml,
    AdamW), no autocast, first step untimed."""
    from peft import LoraConfig, get_peft_model

    loaded = load_model(model_name, dtype="float32")
    model = get_peft_model(
        loaded.model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    tok = loaded.tokenizer
    ex = _sft_examples(model_name, micro_batch)
    rows = [tok(e["prompt"] + e["completion"], add_special_tokens=False)["input_ids"][:seq_len] for e in ex]
    ids = torch.full((micro_batch, seq_len), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    elapsed = 0.0
    for step in range(steps + 1):
        start = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step:
            elapsed += time.perf_counter() - start
    return {"tokens_per_s": steps * micro_batch * seq_len / elapsed, "precision": "float32", "steps": steps}
