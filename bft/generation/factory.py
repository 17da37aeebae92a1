"""Build the generation backend a config names; implementations are imported only when chosen (no import circle,
and no vLLM import on a machine that runs the hf backend)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bft.config.schema import GenerationConfig
    from bft.generation.base import GenerationBackend


def make_backend(gen_cfg: GenerationConfig, model_name: str, adapter: str | None = None) -> GenerationBackend:
    """Build the backend named by ``gen_cfg.backend`` (``hf``, ``vllm`` or ``served``) for ``model_name`` (+ LoRA adapter)."""
    if gen_cfg.backend in ("hf", "vllm"):
        from bft.models.registry import resolve_model_path

        resolve_model_path(model_name)  # a model that is not there fails now, not after the engine's imports (8 s)
    if gen_cfg.backend == "hf":
        from bft.generation.hf import HFBackend

        return HFBackend.from_name(
            model_name,
            dtype=gen_cfg.dtype,
            adapter=adapter,
            batch_size=gen_cfg.batch_size,
            max_batch_tokens=gen_cfg.max_batch_tokens,
            device=getattr(gen_cfg, "device", None) or "auto",  # job files written before the setting: auto
        )
    if gen_cfg.backend == "served":
        from bft.generation.served import ServedBackend

        return ServedBackend.from_config(gen_cfg, model_name, adapter=adapter)
    if gen_cfg.backend == "vllm":
        from bft.generation.vllm import VLLMBackend

        return VLLMBackend.from_config(gen_cfg, model_name, adapter=adapter)
    raise ValueError(f"unknown generation backend '{gen_cfg.backend}' (expected 'hf', 'vllm' or 'served')")
