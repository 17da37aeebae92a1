"""Who writes the answers: the one place that decodes ``rewriter.source`` (and ``rewriter.name``).

- ``none``: filtering only, the kept document text is the answer (no model);
- ``seed_model``: M0, the seed-tuned forward model of the same run (BFT's ablation);
- ``model``: the aligned model ``rewriter.name`` (a registry name, folder or hub id; null = the base ``model``).
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from bft.errors import BftError

SOURCES = ("model", "seed_model", "none")


class RewriterSourceError(BftError, ValueError):
    pass


@dataclass(frozen=True)
class RewriterSource:
    kind: str  # model | seed_model | none
    model: str | None  # the model name when kind == "model"

    @property
    def uses_seed_model(self) -> bool:
        return self.kind == "seed_model"

    @property
    def rewrites(self) -> bool:
        return self.kind != "none"


def rewriter_source(cfg: DictConfig) -> RewriterSource:
    """Decode ``rewriter.source`` of a composed config (``rewriter.name`` null falls back to ``model.name``)."""
    source, name = cfg.rewriter.source, cfg.rewriter.name
    if source not in SOURCES:
        raise RewriterSourceError(f"rewriter.source={source!r} is not one of {', '.join(SOURCES)}")
    if source != "model":
        return RewriterSource(source, None)
    if name in ("none", "seed_model"):
        raise RewriterSourceError(f"rewriter.name={name} names no model: use rewriter={name} (rewriter.source={name})")
    return RewriterSource("model", name if name is not None else cfg.model.name)
