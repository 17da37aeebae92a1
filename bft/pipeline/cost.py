"""Accelerator-hours of a plan, from parameters and tokens (pure functions; the dry run prints them).

FLOPs per token: 2 x params to generate (or score) a token, prompt tokens included; 6 x params to train one with
full fine-tuning (forward 2, backward 4); 4 x params with LoRA (the backward pass still computes activation
gradients through the frozen weights, 2 x params, but no weight gradients). Hours = FLOPs / (peak x MFU) / 3600,
summed over GPUs (a tensor-parallel group of 8 finishes 8 x sooner on 8 x the GPUs: the same GPU-hours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bft.errors import BftError


class CostError(BftError, ValueError):
    """A cost setting (``run.cost.*``) the estimate cannot use."""


# Dense bf16/fp16 tensor-core peak TFLOP/s (vendor datasheets, without sparsity).
PEAK_TFLOPS: dict[str, float] = {
    "A100-40GB": 312.0,
    "A100-80GB": 312.0,
    "H100-SXM": 989.0,
    "H100-PCIe": 756.0,
    "H200": 989.0,
    "L40S": 362.0,
    "L4": 121.0,
    "V100": 125.0,
}
FLOPS_PER_TOKEN = {"generate": 2.0, "full": 6.0, "lora": 4.0}
# Parameter counts of the papers' models (their config.json, counted with ``params_from_config``).
KNOWN_PARAMS: dict[str, int] = {
    "llama2_7b": 6_738_415_616,
    "llama2_7b_chat": 6_738_415_616,
    "meta-llama/Llama-2-7b-hf": 6_738_415_616,
    "meta-llama/Llama-2-7b-chat-hf": 6_738_415_616,
    "llama2_70b": 68_976_648_192,
    "llama2_70b_chat": 68_976_648_192,
    "meta-llama/Llama-2-70b-hf": 68_976_648_192,
    "meta-llama/Llama-2-70b-chat-hf": 68_976_648_192,
    "smollm2_135m": 134_515_008,
}


def params_from_config(config: dict[str, Any]) -> int:
    """Parameters of a Llama-style decoder from its ``config.json`` (no weights loaded): embeddings, attention
    (grouped KV heads), gated MLP, RMSNorms, and the output head unless tied to the embeddings."""
    hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads") or heads
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv * head_dim
    mlp = 3 * hidden * config["intermediate_size"]
    per_layer = attention + mlp + 2 * hidden
    head = 0 if config.get("tie_word_embeddings", False) else vocab * hidden
    return vocab * hidden + layers * per_layer + hidden + head


def flops(params: int, tokens: int, kind: str) -> float:
    """FLOPs to process ``tokens`` tokens with a ``params``-parameter model: ``generate``, ``full`` or ``lora``."""
    if kind not in FLOPS_PER_TOKEN:
        raise ValueError(f"unknown work kind {kind!r} (one of {', '.join(FLOPS_PER_TOKEN)})")
    return FLOPS_PER_TOKEN[kind] * params * tokens


def gpu_hours(total_flops: float, gpu: str, mfu: float) -> float:
    """Accelerator-hours for ``total_flops`` on ``gpu`` (a ``PEAK_TFLOPS`` name) at model FLOPs utilisation ``mfu``."""
    if gpu not in PEAK_TFLOPS:
        raise CostError(f"run.cost.gpu={gpu!r} is not one of {', '.join(PEAK_TFLOPS)}")
    if not 0 < mfu <= 1:
        raise CostError(f"run.cost.mfu must be in (0, 1], got {mfu}")
    return total_flops / (PEAK_TFLOPS[gpu] * 1e12 * mfu) / 3600


@dataclass(frozen=True)
class Work:
    """One step's compute: ``tokens`` processed by a ``params``-parameter model as ``kind``."""

    step: str
    model: str | None
    params: int | None
    records: int | None
    tokens: int | None
    kind: str  # generate | full | lora | none

    def flops(self) -> float | None:
        if self.kind == "none":
            return 0.0
        if self.params is None or self.tokens is None:
            return None
        return flops(self.params, self.tokens, self.kind)


def total_hours(works: list[Work], gpu: str, mfu: float) -> tuple[float, list[str]]:
    """Total accelerator-hours of the steps whose size is known, and the names of those that are not."""
    known = [w.flops() for w in works]
    unknown = [w.step for w, f in zip(works, known, strict=True) if f is None]
    return gpu_hours(sum(f for f in known if f is not None), gpu, mfu), unknown


def model_params(name: str | None) -> int | None:
    """Parameters of a model, without loading weights: the papers' models, or a folder's ``config.json``."""
    if name is None:
        return None
    if name in KNOWN_PARAMS:
        return KNOWN_PARAMS[name]
    import json
    from pathlib import Path

    from bft.models.registry import cache_dir

    for folder in (Path(name).expanduser(), cache_dir() / "models" / name):
        if (folder / "config.json").is_file():
            return params_from_config(json.loads((folder / "config.json").read_text()))
    return None
