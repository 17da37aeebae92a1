"""Where generation runs (``generation.device``), checked on CPU: the setting's resolution and its one-line errors,
the backend and the judge taking their device from the config, the CPU-only fast paths staying off other devices,
device-side sampling picking what the CPU path picks, and batches sized from free GPU memory (a pure function)."""

from __future__ import annotations

import pytest
import torch

from bft.config.machine import resolve_device
from bft.config.validate import ConfigError, check_device_setting
from bft.generation.batching import length_batches
from bft.generation.gpu_memory import (
    HEADROOM,
    LOGIT_BYTES_PER_ENTRY,
    RESERVE_BYTES,
    BatchLimits,
    GpuMemoryError,
    ModelShape,
    batch_limits,
)

GiB = 2**30
LLAMA2_7B = ModelShape(layers=32, hidden=4096, intermediate=11008, heads=32, kv_heads=32, head_dim=128, vocab=32000)
SMOLLM2_135M = ModelShape(layers=30, hidden=576, intermediate=1536, heads=9, kv_heads=3, head_dim=64, vocab=49152)


def _has_cuda() -> bool:
    return torch.cuda.is_available()


# ------------------------------------------------------------------ the setting


@pytest.mark.parametrize(
    "value,count,expected",
    [("auto", 0, "cpu"), ("auto", 2, "cuda:0"), ("cpu", 0, "cpu"), ("cpu", 4, "cpu"), ("cuda", 1, "cuda:0"), ("cuda:1", 2, "cuda:1")],
)
def test_device_setting_resolves_per_machine(value, count, expected):
    assert resolve_device(value, cuda_count=count) == expected


@pytest.mark.parametrize(
    "value,count,message",
    [
        ("cuda", 0, "generation.device=cuda but this machine has no CUDA GPU; use generation.device=auto or"),
        ("cuda:0", 0, "no CUDA GPU"),
        ("cuda:2", 2, "generation.device=cuda:2 but this machine has 2 CUDA GPU(s): cuda:0 to cuda:1"),
        ("gpu", 1, "generation.device='gpu' is not one of auto, cpu, cuda, cuda:N"),
        ("cuda:x", 1, "is not one of"),
    ],
)
def test_a_device_this_machine_lacks_or_a_bad_form_is_one_line(value, count, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        resolve_device(value, cuda_count=count)
    assert "\n" not in str(err.value)


def test_validation_checks_the_form_on_any_machine(compose_cfg):
    from bft.config.validate import validate

    check_device_setting("cuda:3")  # the form is fine anywhere; whether the GPU exists is check_machine's question
    cfg = compose_cfg("generation.device=tpu")
    with pytest.raises(ConfigError, match="generation.device='tpu'"):
        validate(cfg)


@pytest.mark.skipif(_has_cuda(), reason="this machine has CUDA")
def test_the_cli_refuses_cuda_without_cuda_before_any_work():
    """What ``bft generation.device=cuda`` prints (bft.cli.main.precheck_overrides), before Hydra makes a run folder."""
    from bft.cli.main import precheck_overrides

    assert resolve_device("auto") == "cpu"
    problem = precheck_overrides(["generation.device=cuda"])
    assert problem == "generation.device=cuda but this machine has no CUDA GPU; use generation.device=auto or generation.device=cpu"
    assert precheck_overrides(["generation.device=cuda", "run.dry_run=true"]) is None  # a dry run plans for any machine
    assert precheck_overrides(["generation.device=cpu"]) is None


@pytest.mark.slow  # loads the tiny model
@pytest.mark.skipif(_has_cuda(), reason="this machine has CUDA")
def test_backend_and_judge_take_their_device_from_the_config_and_refuse_cuda_before_loading(monkeypatch):
    from bft.config.schema import GenerationConfig
    from bft.eval import judges
    from bft.generation.factory import make_backend
    from bft.models import registry

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the device was checked")

    with monkeypatch.context() as m:
        m.setattr(registry, "load_model", no_load)
        with pytest.raises(ConfigError, match="generation.device=cuda"):
            make_backend(GenerationConfig(device="cuda"), "tiny")
        with pytest.raises(ConfigError, match="generation.device=cuda:1"):
            judges.hf_logprob_completions(["x"], model_name="tiny", device="cuda:1")
    loaded_on = []
    real = registry.load_model
    monkeypatch.setattr(registry, "load_model", lambda *a, **k: loaded_on.append(k["device"]) or real(*a, **k))
    backend = make_backend(GenerationConfig(device="cpu", batch_size=3), "tiny")
    assert loaded_on == ["cpu"] and backend.device.type == "cpu" and backend.on_cpu
    assert backend.packed_linear_layers > 0 or not torch.backends.mkldnn.is_available()


def test_the_cpu_fast_paths_stay_off_other_devices():
    """Packing, fused kernels and the CPU attention engage only on a CPU model (here: one on the meta device)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from bft.generation.cpu_attention import use_decode_attention
    from bft.generation.cpu_fused import fuse_elementwise
    from bft.generation.cpu_linear import can_pack

    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert not can_pack(model) and fuse_elementwise(model) == 0 and not use_decode_attention(model)
    assert model.config._attn_implementation == "sdpa"


def test_sampling_off_cpu_picks_what_the_cpu_path_picks():
    """Off CPU every row goes through the full sort (no host sync to choose the top-64 shortcut): same tokens."""
    from bft.generation.base import Sampling
    from bft.generation.sampling import nucleus_by_sort, sample_tokens

    torch.manual_seed(0)
    logits = torch.randn(16, 3000)
    logits[:8, :5] += 8.0  # peaked rows take the top-64 shortcut on CPU, flat rows the sort
    sampling = Sampling(temperature=0.8, top_p=0.9)
    on_cpu = sample_tokens(logits, sampling, [torch.Generator().manual_seed(i) for i in range(16)])
    u = torch.cat([torch.rand(1, generator=torch.Generator().manual_seed(i)) for i in range(16)])
    by_sort = nucleus_by_sort(torch.softmax(logits / 0.8, dim=-1), u, 0.9)
    assert torch.equal(on_cpu, by_sort)


# ------------------------------------------------------------------ batches from free GPU memory


def _batch_bytes(shape: ModelShape, dtype_bytes: int, widths: list[int], prompts: list[int], prefill: int) -> float:
    """What a batch holds at its peak, as the module docstring counts it."""
    kv = shape.kv_bytes_per_position(dtype_bytes) * (shape.layers + 1) / shape.layers
    act = shape.prefill_bytes_per_token(dtype_bytes, max(widths)) * max(prefill, max(prompts))
    return len(widths) * max(widths) * kv + act + len(widths) * shape.vocab * LOGIT_BYTES_PER_ENTRY


def test_llama2_7b_shape_figures():
    assert LLAMA2_7B.kv_bytes_per_position(2) == 512 * 1024  # 2 x 32 layers x 4096 x 2 bytes
    from transformers import LlamaConfig

    shape = ModelShape.from_config(LlamaConfig(num_key_value_heads=8))  # defaults are Llama-2-7B's, with GQA here
    assert (shape.layers, shape.hidden, shape.kv_heads, shape.head_dim, shape.vocab) == (32, 4096, 8, 128, 32000)


@pytest.mark.parametrize("shape", [LLAMA2_7B, SMOLLM2_135M], ids=["llama2_7b", "smollm2_135m"])
@pytest.mark.parametrize("free_gib", [6, 24, 100])
@pytest.mark.parametrize("new_tokens", [0, 64, 512])
def test_every_batch_of_the_plan_fits_in_the_memory_planned_for(shape, free_gib, new_tokens):
    from bft.bench.workload import shipped_lengths

    prompts = shipped_lengths()[:256] + [30] * 64  # real document lengths and short instructions
    limits = batch_limits(free_gib * GiB, shape, 2, prompts, new_tokens, context=4096)
    usable = free_gib * GiB * HEADROOM - RESERVE_BYTES
    assert limits.rows >= 1 and limits.tokens >= 1 and limits.prefill_tokens >= max(prompts)
    for batch in length_batches(prompts, limits.rows, limits.tokens, new_tokens):
        widths = [prompts[i] + new_tokens for i in batch]
        assert _batch_bytes(shape, 2, widths, [prompts[i] for i in batch], limits.prefill_tokens) <= usable


def test_more_free_memory_gives_larger_batches_and_longer_rows_fewer():
    lengths = [400] * 100
    small, large = (batch_limits(g * GiB, LLAMA2_7B, 2, lengths, 64) for g in (20, 100))
    assert large.tokens > 4 * small.tokens and large.rows > 4 * small.rows
    longer = batch_limits(100 * GiB, LLAMA2_7B, 2, [1600] * 100, 64)
    assert longer.rows < large.rows
    # on an H200 after 7B weights (~125 GiB free), about 200k KV positions of 512 KiB: the GPU's memory, not 32768
    h200 = batch_limits(125 * GiB, LLAMA2_7B, 2, lengths, 64)
    assert 150_000 < h200.tokens < 230_000


def test_a_row_that_cannot_fit_fails_in_one_line():
    with pytest.raises(GpuMemoryError, match="one row of 4000 prompt \\+ 96 new tokens needs") as err:
        batch_limits(3 * GiB, LLAMA2_7B, 2, [4000, 10], 96)
    assert "\n" not in str(err.value)
    assert batch_limits(GiB, LLAMA2_7B, 2, [], 10) == BatchLimits(1, 1, 1)


def test_the_backend_plans_each_call_from_free_memory_off_cpu(monkeypatch):
    """``HFBackend._plan_call`` off CPU: limits from the free bytes, the model's shape and dtype, the call's lengths."""
    from bft.generation import hf

    seen = {}

    def fake_free(device):
        seen["device"] = device
        return 40 * GiB

    monkeypatch.setattr(hf, "free_cuda_bytes", fake_free)
    backend = object.__new__(hf.HFBackend)
    backend.on_cpu, backend.device, backend.dtype, backend.shape, backend.context_length = (
        False,
        torch.device("meta"),
        torch.bfloat16,
        LLAMA2_7B,
        4096,
    )
    limits = backend._plan_call([300, 500], 64)
    assert limits == batch_limits(40 * GiB, LLAMA2_7B, 2, [300, 500], 64, 4096) and seen["device"] == torch.device("meta")
    assert backend._prefill_budget() == limits.prefill_tokens
    assert backend._batches([[1] * 300, [1] * 500], extra=64) == length_batches([300, 500], limits.rows, limits.tokens, 64)
