"""Export a fully fine-tuned model trained under a sharded strategy (FSDP, DeepSpeed ZeRO-3) as one
``save_pretrained`` folder, using the consolidation that Lightning, torch and DeepSpeed provide:

- Lightning's ``trainer.save_checkpoint`` writes the checkpoint collectively: FSDP with ``state_dict_type="full"``
  (Lightning's default) gathers a full state dict on rank 0 into one file; FSDP ``"sharded"`` writes a
  torch.distributed.checkpoint (DCP) folder; DeepSpeed writes a ZeRO folder.
- Rank 0 turns it into a plain state dict: a file is read with ``torch.load``; a DCP folder goes through
  ``torch.distributed.checkpoint.format_utils.dcp_to_torch_save``; a ZeRO folder through DeepSpeed's
  ``get_fp32_state_dict_from_zero_checkpoint``.
- The weights are assigned to a model built on the meta device from the base model's config (no second copy,
  no random initialisation) and saved with ``save_pretrained``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

MODULE_PREFIX = "model."  # SFTModule keeps the causal LM in ``self.model``


def is_sharded_strategy(strategy: object) -> bool:
    """Whether no rank holds the full weights after training (FSDP, DeepSpeed stage 3)."""
    name = strategy if isinstance(strategy, str) else type(strategy).__name__.lower()
    return name.startswith("fsdp") or "deepspeed_stage_3" in name or name.startswith("deepspeedstrategy")


def _is_deepspeed_folder(path: Path) -> bool:
    return (path / "latest").exists() or any(path.glob("*/zero_pp_rank_*"))


def consolidated_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The full LightningModule state dict of a Lightning checkpoint: a file, a DCP folder or a ZeRO folder."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_file():
        return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    if _is_deepspeed_folder(checkpoint):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        flat = Path(tmp) / "full.pt"
        dcp_to_torch_save(checkpoint, flat)
        full = torch.load(flat, map_location="cpu", weights_only=False)
    return full["model"] if "model" in full else full["state_dict"]


def save_full_model(
    state_dict: dict[str, torch.Tensor],
    base_path: str,
    folder: Path,
    tokenizer,
    config_overrides: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Save ``state_dict`` (LightningModule keys, ``model.`` prefix) as a ``save_pretrained`` folder of the base
    model's architecture; ``config_overrides`` restores config fields changed for training (dropout)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_path)
    for name, value in (config_overrides or {}).items():
        setattr(config, name, value)
    config.use_cache = True
    weights = {k[len(MODULE_PREFIX) :]: v.to(dtype) for k, v in state_dict.items() if k.startswith(MODULE_PREFIX)}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    result = model.load_state_dict(weights, strict=False, assign=True)
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing or result.unexpected_keys:
        raise ValueError(f"checkpoint does not match {base_path}: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
