"""Checks of values that types alone cannot express. Each failure is one line naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bft.config.machine import check_device_setting  # re-exported: the form of a device setting
from bft.errors import ConfigError

__all__ = ["ConfigError", "check_device_setting", "validate"]


_CHOICES = {
    "curation.scoring": ("generate", "logprob", "generate_n"),
    "rewriter.mode": ("rewrite", "distill"),
    "peft.method": ("lora", "full"),
    "generation.backend": ("hf", "vllm", "served"),
    "generation.server.kind": ("endpoint", "vllm", "sglang"),
    "logger.mode": ("offline", "online", "disabled"),
    "data.on_error": ("raise", "skip"),
    "seed.size_scope": ("all", "forward"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "generation.dtype": ("auto", "float32", "bfloat16", "float16"),
    "workers.engine": ("inprocess", "submitit", "ray"),
    "workers.cluster": ("local", "slurm", "debug"),
}
_SFT_CHOICES = {"schedule": ("cosine", "linear", "constant"), "grouping": ("length", "packing", "none")}


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
    check_embedded_model(cfg)
    from bft.generation.served import check_server_config

    check_server_config(cfg.generation)
    check_eval(cfg.eval, cfg.model.name)
    from bft.sft.launchers import check_launcher

    check_launcher(cfg.trainer)


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
    from bft.eval.inference_tags import inference_tag_text

    inference_tag_text(cfg.eval.inference_tag, cfg.sft.seed_tag, cfg.sft.web_tag)  # one line naming the key if unknown
    from bft.rewriter.source import rewriter_source

    if not rewriter_source(cfg).rewrites and not cfg.curation.enabled:
        raise ConfigError("rewriter=none with curation disabled leaves raw, unfiltered text: enable one of them")


def check_embedded_model(cfg: DictConfig) -> None:
    """``pip install bft`` does not bring the embedded model (bft.models.registry.EMBEDDED_MISSING): say how to get
    it, or which setting to point elsewhere, before any work when a model setting needs it and it was never built."""
    from bft.models.registry import embedded_model_problem

    settings = {"model.name": cfg.model.name, "rewriter.name": cfg.rewriter.name}
    settings |= {f"{role}.name": cfg[role].name for role in ("backward_model", "curation_model", "final_model") if cfg[role]}
    if cfg.eval.annotator == "local":
        settings["eval.judge_model"] = cfg.eval.judge_model
    for key, name in settings.items():
        problem = embedded_model_problem(name) if name else None
        if problem:
            raise ConfigError(problem if key == "model.name" else problem.replace("set model=", f"set {key}="))


EVAL_SETS = ("embedded", "ae1", "ae2")  # bft.eval.sets: the shipped set and AlpacaEval 1.0 / 2.0 from the hub
EVAL_REFERENCES = ("base", "dataset")  # the untuned base model's outputs | the eval set's own reference outputs


def reference_outputs_file(reference: str) -> Path | None:
    """The ``model_outputs.json`` that ``eval.reference=<file or run folder>`` names, or None."""
    path = Path(reference).expanduser()
    return next((c for c in (path, path / "model_outputs.json", path / "eval" / "model_outputs.json") if c.is_file()), None)


def check_eval(e: DictConfig, model_name: str) -> None:
    """Every ``eval.*`` value that names something (set, reference, annotator, judge, scheme, folders), checked
    before any work: a bad one would otherwise fail at the last stage, after training. No network, no model load."""
    from bft.config.schema import EvalConfig
    from bft.eval.annotators import LOCAL, AnnotatorError, annotator_problem, check_scheme
    from bft.eval.endpoint import ENDPOINT, EndpointError, endpoint_for
    from bft.models.registry import model_name_problem

    if e.set not in EVAL_SETS and not Path(e.set).expanduser().is_file():
        raise ConfigError(f"eval.set={e.set!r} is not one of {', '.join(EVAL_SETS)} or an existing alpaca_eval-format JSON/JSONL file")
    if e.reference not in EVAL_REFERENCES and reference_outputs_file(e.reference) is None:
        raise ConfigError(
            f"eval.reference={e.reference!r} is not one of {', '.join(EVAL_REFERENCES)} or a run folder / file holding "
            "model_outputs.json"
        )
    try:
        problem = annotator_problem(e.annotator)
        if problem:
            raise ConfigError(f"eval.annotator={e.annotator!r} {problem}")
        endpoint_for(e.annotator, e.judge_url, e.judge_model, e.judge_api_key_env, e.judge_api_scheme)
        if e.annotator == ENDPOINT:
            try:
                check_scheme(e.judge_api_scheme, e.judge_orders)
            except AnnotatorError as err:
                raise ConfigError(f"eval.judge_api_scheme={e.judge_api_scheme!r}: {err}") from None
        elif e.judge_api_scheme != EvalConfig.judge_api_scheme:
            raise ConfigError(f"eval.judge_api_scheme is set but eval.annotator={e.annotator}: use eval.annotator={ENDPOINT}")
    except (AnnotatorError, EndpointError) as err:
        raise ConfigError(str(err)) from None
    if e.annotator == LOCAL:
        judge = e.judge_model if e.judge_model is not None else model_name
        problem = model_name_problem(judge)
        if problem:
            raise ConfigError(f"eval.judge_model={judge!r}: {problem}")
    if e.lc_weights_dir is not None and not Path(e.lc_weights_dir).expanduser().is_dir():
        raise ConfigError(f"eval.lc_weights_dir={e.lc_weights_dir!r} is not a folder (one holding alpaca_eval's df_gamed.csv) or null")
