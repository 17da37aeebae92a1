"""Checks of values that types alone cannot express. Each failure is one line naming the key."""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig

from bft.errors import ConfigError

__all__ = ["ConfigError", "check_device_setting", "validate"]


_CHOICES = {
    "curation.scoring": ("generate", "logprob", "generate_n"),
    "rewriter.mode": ("rewrite", "distill"),
    "peft.method": ("lora", "full"),
    "generation.backend": ("hf", "vllm"),
    "logger.mode": ("offline", "online", "disabled"),
    "data.on_error": ("raise", "skip"),
    "seed.size_scope": ("all", "forward"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "generation.dtype": ("auto", "float32", "bfloat16", "float16"),
    "workers.engine": ("inprocess", "submitit", "ray"),
    "workers.cluster": ("local", "slurm", "debug"),
}
_SFT_CHOICES = {"schedule": ("cosine", "linear", "constant"), "grouping": ("length", "packing", "none")}


DEVICE_SETTING = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_setting(value: str, key: str = "generation.device") -> None:
    """The form of a device setting (any machine): ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; whether this machine
    has that device is :func:`bft.config.machine.resolve_device`'s question."""
    if not isinstance(value, str) or not DEVICE_SETTING.fullmatch(value):
        raise ConfigError(f"{key}={value!r} is not one of auto, cpu, cuda, cuda:N")


def _get(cfg: DictConfig, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _hydra_context(cfg: DictConfig, hydra_cfg: Any) -> tuple[dict[str, Any], list[str], str | None]:
    """(group choices, task overrides, config folder) of the composition, from Hydra's own record of it."""
    if hydra_cfg is None and "hydra" in cfg:
        hydra_cfg = cfg.hydra
    if hydra_cfg is None:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra_cfg is None:
        return {}, [], None
    conf_dir = next((s.path for s in hydra_cfg.runtime.config_sources if s.provider == "main"), None)
    return dict(hydra_cfg.runtime.choices), list(hydra_cfg.overrides.task), conf_dir


def validate(cfg: DictConfig, hydra_cfg: Any = None) -> None:
    """Every config check: schema keys, mandatory values, ranges, choices (this machine: bft.config.machine)."""
    from bft.config.strict import check_mandatory, check_ranges, check_unknown_keys

    check_unknown_keys(cfg)
    choices, overrides, conf_dir = _hydra_context(cfg, hydra_cfg)
    if conf_dir:
        check_mandatory(cfg, choices, overrides, conf_dir.removeprefix("file://"))
    check_ranges(cfg)
    _check_values(cfg)


def _check_values(cfg: DictConfig) -> None:
    for key, choices in _CHOICES.items():
        value = _get(cfg, key)
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}")
    for stage in ("backward", "seed", "final"):
        sft = cfg.sft[stage]
        for field, choices in _SFT_CHOICES.items():
            if sft[field] not in choices:
                raise ConfigError(f"sft.{stage}.{field}={sft[field]!r} is not one of {', '.join(choices)}")
        for field in ("lr", "max_steps", "batch_size", "micro_batch_size", "max_seq_len"):
            if sft[field] <= 0:
                raise ConfigError(f"sft.{stage}.{field} must be > 0, got {sft[field]}")
        if sft.batch_size % sft.micro_batch_size:
            raise ConfigError(f"sft.{stage}.batch_size must be a multiple of micro_batch_size")
        if not 0 <= sft.lr_floor_ratio <= 1:
            raise ConfigError(f"sft.{stage}.lr_floor_ratio is a ratio of the peak lr in [0, 1], got {sft.lr_floor_ratio}")
    cur = cfg.curation
    if cur.iterations < 1:
        raise ConfigError(f"curation.iterations must be >= 1, got {cur.iterations}")
    if cur.threshold is None and cur.top_k is None and cur.top_fraction is None:
        raise ConfigError("curation: set one of threshold, top_k or top_fraction")
    if cur.top_fraction is not None and not 0 < cur.top_fraction <= 1:
        raise ConfigError(f"curation.top_fraction must be in (0, 1], got {cur.top_fraction}")
    if cfg.seed.size is not None and cfg.seed.size < 1:
        raise ConfigError(f"seed.size must be >= 1, got {cfg.seed.size}")
    if cfg.corpus.min_chars >= cfg.corpus.max_chars:
        raise ConfigError("corpus.min_chars must be smaller than corpus.max_chars")
    check_device_setting(cfg.generation.device)  # its form; whether this machine has the device: check_machine
    if cfg.generation.batch_size < 1 or cfg.generation.shard_size < 1:
        raise ConfigError("generation.batch_size and generation.shard_size must be >= 1")
    if cfg.workers.count < 1:
        raise ConfigError(f"workers.count must be >= 1, got {cfg.workers.count}")
    from bft.rewriter.source import rewriter_source

    if not rewriter_source(cfg).rewrites and not cfg.curation.enabled:
        raise ConfigError("rewriter=none with curation disabled leaves raw, unfiltered text: enable one of them")
