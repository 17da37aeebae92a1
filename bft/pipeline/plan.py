"""Which stages a composed config runs, in order, and how each one's upstream names map to earlier steps.

The plan is built from the RESOLVED config (``bft.pipeline.roles.resolve``): each step gets its stage's slice.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bft.pipeline.roles import backward_seed_overrides, resolve
from bft.pipeline.stage import Stage
from bft.pipeline.stages.data import BASELINE_DATA, CORPUS, SEED, TRAIN_DATA
from bft.pipeline.stages.evaluation import BASE_OUTPUTS, EVAL_OUTPUTS, EVALUATE
from bft.pipeline.stages.generation import AUGMENT, CURATE
from bft.pipeline.stages.rewrite import KEEP_TEXT, REWRITE_BY_MODEL, REWRITE_BY_SEED_MODEL
from bft.pipeline.stages.training import BACKWARD_MODEL, CURATION_MODEL, FINAL_MODEL, SEED_MODEL
from bft.rewriter.source import rewriter_source


@dataclass(frozen=True)
class Step:
    name: str  # unique within a run, e.g. curate_1
    stage: Stage
    upstream: dict[str, str]  # logical input name -> earlier step name
    slice: DictConfig  # the stage's settings, the only config its compute sees

    def __post_init__(self) -> None:
        """The upstream names must be exactly what the stage declares it reads (``name?`` = optional)."""
        required = {r for r in self.stage.reads if not r.endswith("?")}
        allowed = required | {r.removesuffix("?") for r in self.stage.reads}
        given = set(self.upstream)
        if not required <= given <= allowed:
            raise ValueError(f"step {self.name}: reads {sorted(given)}, but stage {self.stage.name} declares {self.stage.reads}")

    @property
    def config(self) -> dict[str, Any]:
        """What the artifact key hashes."""
        return self.stage.key_config(self.slice)


# The plan being built: its resolved config as plain containers (Stage.config_slice finds cached slices in it).
_PLAIN: dict[int, dict[str, Any]] = {}


def _step(cfg: DictConfig, name: str, stage: Stage, upstream: dict[str, str] | None = None) -> Step:
    return Step(name, stage, upstream or {}, stage.config_slice(cfg, _PLAIN.get(id(cfg))))


def build_plan(cfg: DictConfig) -> list[Step]:
    cfg = resolve(cfg)
    with contextlib.suppress(OmegaConfBaseException):  # a value no stage reads fails: each slice resolves its own
        _PLAIN[id(cfg)] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    try:
        return _build_plan(cfg)
    finally:
        _PLAIN.pop(id(cfg), None)


def _build_plan(cfg: DictConfig) -> list[Step]:
    steps = [_step(cfg, "seed", SEED)]
    if cfg.data.baseline_file:
        return [*steps, _step(cfg, "baseline_data", BASELINE_DATA), *_training_and_eval(cfg, "baseline_data")]
    backward_seed = "seed"
    overrides = backward_seed_overrides(cfg)
    if overrides is not None:
        full = cfg.copy()
        for path, value in overrides.items():
            OmegaConf.update(full, path, value)
        steps.append(_step(full, "seed_full", SEED))
        backward_seed = "seed_full"
    return [*steps, *_generation(cfg, backward_seed), *_training_and_eval(cfg, "rewrite")]


def _generation(cfg: DictConfig, backward_seed: str) -> list[Step]:
    """corpus -> backward model -> augment -> [seed model -> curate_i]* -> rewrite."""
    source = rewriter_source(cfg)
    steps = [
        _step(cfg, "corpus", CORPUS),
        _step(cfg, "backward_model", BACKWARD_MODEL, {"seed": backward_seed}),
        _step(cfg, "augment", AUGMENT, {"corpus": "corpus", "backward_model": "backward_model"}),
    ]
    if cfg.curation.enabled or source.uses_seed_model:
        steps.append(_step(cfg, "seed_model", SEED_MODEL, {"seed": "seed"}))
    pairs = "augment"
    if cfg.curation.enabled:
        judge = "seed_model"
        for i in range(cfg.curation.iterations):
            if i > 0:
                judge = f"curation_model_{i}"
                steps.append(_step(cfg, judge, CURATION_MODEL, {"seed": "seed", "curated": pairs}))
            steps.append(_step(cfg, f"curate_{i}", CURATE, {"augment": "augment", "judge": judge}))
            pairs = f"curate_{i}"
    if source.kind == "none":
        steps.append(_step(cfg, "rewrite", KEEP_TEXT, {"pairs": pairs}))
    elif source.uses_seed_model:
        steps.append(_step(cfg, "rewrite", REWRITE_BY_SEED_MODEL, {"pairs": pairs, "rewriter": "seed_model"}))
    else:
        steps.append(_step(cfg, "rewrite", REWRITE_BY_MODEL, {"pairs": pairs}))
    return steps


def _training_and_eval(cfg: DictConfig, generated: str) -> list[Step]:
    """train_data -> final model -> eval outputs (+ base outputs) -> evaluate."""
    steps = [
        _step(cfg, "train_data", TRAIN_DATA, {"seed": "seed", "generated": generated}),
        _step(cfg, "final_model", FINAL_MODEL, {"train_data": "train_data"}),
        _step(cfg, "eval_outputs", EVAL_OUTPUTS, {"final_model": "final_model"}),
    ]
    evaluate_upstream = {"eval_outputs": "eval_outputs"}
    if cfg.eval.reference == "base":
        steps.append(_step(cfg, "base_outputs", BASE_OUTPUTS))
        evaluate_upstream["base_outputs"] = "base_outputs"
    steps.append(_step(cfg, "evaluate", EVALUATE, evaluate_upstream))
    return steps
