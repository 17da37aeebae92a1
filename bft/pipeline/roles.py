"""Per-role models and the other settings that fall back to another one, resolved once before planning.

``eval.inference_tag`` is resolved here too: ``seed``, ``web``, ``both`` or ``none`` become the tag text itself.

The backward model, the curation model (M0 and M_i), the final model, the rewriter and the local judge each
default to the base ``model``. Stages read the RESOLVED setting, so their keys hash the model that is really used
and equal settings share artifacts (``backward_model`` left null and ``backward_model`` = ``model`` give one key).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from bft.config.validate import ConfigError
from bft.eval.inference_tags import inference_tag_text
from bft.rewriter.source import rewriter_source

# setting -> the setting it takes its value from when null
FALLBACKS: dict[str, str] = {
    "backward_model": "model",
    "curation_model": "model",
    "final_model": "model",
    "rewriter.name": "model.name",
    "eval.judge_model": "model.name",
}
# Model settings no loader reads yet: refuse them instead of hashing a setting that does nothing.
_UNREAD_MODEL_SETTINGS = {"revision": None, "trust_remote_code": False}


def resolve(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with every null fallback setting filled in (idempotent)."""
    out = cfg.copy()
    for setting, source in FALLBACKS.items():
        if OmegaConf.select(out, setting) is None:
            OmegaConf.update(out, setting, OmegaConf.select(out, source), merge=False)
    # eval.inference_tag names a training tag (seed | web | both | none): the eval outputs hash the text itself
    out.eval.inference_tag = inference_tag_text(out.eval.inference_tag, out.sft.seed_tag, out.sft.web_tag)
    for role in ("model", "backward_model", "curation_model", "final_model"):
        for key, default in _UNREAD_MODEL_SETTINGS.items():
            if out[role][key] != default:
                raise ConfigError(f"{role}.{key}={out[role][key]!r}: not supported yet (no model loader reads it)")
    return out


def roles(cfg: DictConfig) -> dict[str, Any]:
    """Which model plays which role, for the dry run and the summary."""
    cfg = resolve(cfg)
    source = rewriter_source(cfg)
    rewriter = {"model": source.model, "seed_model": cfg.curation_model.name, "none": None}[source.kind]
    return {
        "backward": cfg.backward_model.name,
        "curation": cfg.curation_model.name,
        "final": cfg.final_model.name,
        "rewriter": rewriter,
        "judge": cfg.eval.judge_model if cfg.eval.annotator == "local" else cfg.eval.annotator,
    }


def backward_seed_overrides(cfg: DictConfig) -> dict[str, Any] | None:
    """``seed.size_scope``, decoded once: with ``forward`` and a ``seed.size``, the backward model trains on the
    whole seed set (these overrides of its seed step); otherwise it shares the forward models' seed (None)."""
    if cfg.seed.size is not None and cfg.seed.size_scope == "forward":
        return {"seed.size": None, "seed.size_scope": "all"}
    return None


def models_to_load(cfg: DictConfig) -> list[str]:
    """Every base model a run loads by name (the trained roles and a rewriter model), once each."""
    models = roles(cfg)
    names = [models["backward"], models["curation"], models["final"]]
    source = rewriter_source(resolve(cfg))
    return list(dict.fromkeys([*names, *([source.model] if source.kind == "model" else [])]))
