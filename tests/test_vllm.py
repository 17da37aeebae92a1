"""vLLM placement: the generation config's tensor/data parallel sizes, memory fraction, max length and dtype reach
vllm.LLM; a missing vllm or a bad value fails in one line before any work. vLLM is not installed here (no GPU): the
tests put a recording stand-in module into sys.modules (test-only, never importable by the CLI)."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest

from bft.config.validate import ConfigError
from bft.generation.base import Sampling
from bft.generation.factory import make_backend
from bft.generation.vllm import engine_kwargs
from bft.models.registry import resolve_model_path

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)


class RecordingLLM:
    """Test-only stand-in for vllm.LLM: records its arguments and echoes one token per request."""

    calls: list[dict] = []

    def __init__(self, **kwargs):
        RecordingLLM.calls.append(kwargs)
        # where vLLM exposes its resolved context (its default is the model's own; 2048 for the tiny model)
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=kwargs.get("max_model_len", 2048)))

    def generate(self, inputs, params, lora_request=None, use_tqdm=False):
        self.last = (inputs, params, lora_request)
        one = SimpleNamespace(text=" ok", token_ids=[1], finish_reason="stop")
        return [SimpleNamespace(outputs=[one]) for _ in inputs]


@pytest.fixture
def fake_vllm(monkeypatch):
    RecordingLLM.calls = []
    module = types.ModuleType("vllm")
    module.LLM = RecordingLLM
    module.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, idx, path: ("lora", name, idx, path)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    return RecordingLLM


def test_70b_chat_rewriter_places_on_one_8_gpu_node(compose_cfg, fake_vllm):
    cfg = compose_cfg("rewriter=llama2_70b_chat", "generation=vllm")
    backend = make_backend(cfg.generation, "tiny")
    assert fake_vllm.calls == [
        {
            "model": resolve_model_path("tiny"),
            "seed": 0,
            "enable_prefix_caching": True,
            "dtype": "auto",
            "tensor_parallel_size": 8,
            "gpu_memory_utilization": 0.9,
            "max_model_len": 4096,
        }
    ]
    out = backend.generate(["<|im_start|>user\nhi<|im_end|>\n"], Sampling(max_new_tokens=3), seed=1)
    assert out[0].text == " ok" and out[0].finished
    inputs, params, _ = backend.llm.last
    assert "prompt_token_ids" in inputs[0] and params[0].max_tokens == 3


def test_placement_overrides_reach_vllm(compose_cfg, fake_vllm, tmp_path):
    cfg = compose_cfg(
        "generation=vllm",
        "generation.tensor_parallel_size=4",
        "generation.data_parallel_size=2",
        "generation.gpu_memory_utilization=0.8",
        "generation.max_model_len=2048",
        "generation.dtype=bfloat16",
    )
    make_backend(cfg.generation, "tiny", adapter=str(tmp_path))
    kwargs = fake_vllm.calls[-1]
    assert kwargs["tensor_parallel_size"] == 4 and kwargs["data_parallel_size"] == 2
    assert kwargs["gpu_memory_utilization"] == 0.8 and kwargs["max_model_len"] == 2048 and kwargs["dtype"] == "bfloat16"
    assert kwargs["enable_lora"] is True


def test_a_prompt_past_max_model_len_is_refused_before_vllm_runs(compose_cfg, fake_vllm):
    from bft.generation.base import PromptTooLongError

    backend = make_backend(compose_cfg("generation=vllm", "generation.max_model_len=16").generation, "tiny")
    fits, too_long = "<|im_start|>user\nhi<|im_end|>\n", "<|im_start|>user\n" + "word " * 40 + "<|im_end|>\n"
    assert backend.generate([fits], Sampling(max_new_tokens=3), 0)[0].text == " ok"
    del backend.llm.last
    for call in (lambda: backend.generate([fits, too_long], Sampling(), 0), lambda: backend.next_token_logprobs([too_long], ["1"])):
        with pytest.raises(PromptTooLongError, match=r"context of 16 tokens \(vLLM max_model_len\)"):
            call()
    assert not hasattr(backend.llm, "last")  # vLLM was never called


def test_single_gpu_defaults_omit_data_parallelism(compose_cfg):
    kwargs = engine_kwargs(compose_cfg("generation=vllm").generation)
    assert kwargs["tensor_parallel_size"] == 1 and "data_parallel_size" not in kwargs


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("generation.tensor_parallel_size=0", r"^generation\.tensor_parallel_size must be an integer >= 1"),
        ("generation.gpu_memory_utilization=1.5", r"^generation\.gpu_memory_utilization is a fraction"),
        ("generation.max_model_len=0", r"^generation\.max_model_len must be a positive integer"),
        ("+generation.vllm.tensor_parallel_size=2", r"^generation\.vllm\.tensor_parallel_size: set generation\.tensor_parallel_size"),
    ],
)
def test_bad_placement_is_one_line(compose_cfg, override, match):
    with pytest.raises(ConfigError, match=match) as err:
        engine_kwargs(compose_cfg("generation=vllm", override).generation)
    assert "\n" not in str(err.value)


def test_missing_vllm_fails_before_any_work(compose_cfg, monkeypatch, tmp_path):
    from bft.pipeline.runner import run_pipeline

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, as on a CPU install
    artifacts = tmp_path / "artifacts"
    cfg = compose_cfg("debug=smoke", "generation=vllm", f"run.artifacts_dir={artifacts}")
    with pytest.raises(ConfigError, match=r"^generation\.backend=vllm needs the vllm package") as err:
        run_pipeline(cfg, tmp_path)
    assert "\n" not in str(err.value)
    assert not artifacts.exists()
