"""Which stages a composed config runs, in order, and how each one's upstream names map to earlier steps.

The plan is built from the RESOLVED config (``bft.pipeline.roles.resolve``): each step gets its stage's slice.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class _Planning:
    """The resolved config of the plan being built, and the same as plain containers, converted once
    (``Stage.config_slice`` finds cached slices in it without selecting each setting)."""

    cfg: DictConfig
    plain: dict[str, Any] | None

    @classmethod
    def of(cls, cfg: DictConfig) -> _Planning:
        try:
            plain = OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException:  # a value no stage reads fails to resolve: each slice resolves its own
            plain = None
        return cls(cfg, plain)  # type: ignore[arg-type]

    def step(self, name: str, stage: Stage, upstream: dict[str, str] | None = None) -> Step:
        return Step(name, stage, upstream or {}, stage.config_slice(self.cfg, self.plain))


def build_plan(cfg: DictConfig) -> list[Step]:
    p = _Planning.of(resolve(cfg))
    steps = [p.step("seed", SEED)]
    if p.cfg.data.baseline_file:
        return [*steps, p.step("baseline_data", BASELINE_DATA), *_training_and_eval(p, "baseline_data")]
    backward_seed = "seed"
    overrides = backward_seed_overrides(p.cfg)
    if overrides is not None:
        full = p.cfg.copy()
        for path, value in overrides.items():
            OmegaConf.update(full, path, value)
        steps.append(_Planning(full, None).step("seed_full", SEED))
        backward_seed = "seed_full"
    return [*steps, *_generation(p, backward_seed), *_training_and_eval(p, "rewrite")]


def _generation(p: _Planning, backward_seed: str) -> list[Step]:
    """corpus -> backward model -> augment -> [seed model -> curate_i]* -> rewrite."""
    source = rewriter_source(p.cfg)
    steps = [
        p.step("corpus", CORPUS),
        p.step("backward_model", BACKWARD_MODEL, {"seed": backward_seed}),
        p.step("augment", AUGMENT, {"corpus": "corpus", "backward_model": "backward_model"}),
    ]
    if p.cfg.curation.enabled or source.uses_seed_model:
        steps.append(p.step("seed_model", SEED_MODEL, {"seed": "seed"}))
    pairs = "augment"
    if p.cfg.curation.enabled:
        judge = "seed_model"
        for i in range(p.cfg.curation.iterations):
            if i > 0:
                judge = f"curation_model_{i}"
                steps.append(p.step(judge, CURATION_MODEL, {"seed": "seed", "curated": pairs}))
            steps.append(p.step(f"curate_{i}", CURATE, {"augment": "augment", "judge": judge}))
            pairs = f"curate_{i}"
    if source.kind == "none":
        steps.append(p.step("rewrite", KEEP_TEXT, {"pairs": pairs}))
    elif source.uses_seed_model:
        steps.append(p.step("rewrite", REWRITE_BY_SEED_MODEL, {"pairs": pairs, "rewriter": "seed_model"}))
    else:
        steps.append(p.step("rewrite", REWRITE_BY_MODEL, {"pairs": pairs}))
    return steps


def _training_and_eval(p: _Planning, generated: str) -> list[Step]:
    """train_data -> final model -> eval outputs (+ base outputs) -> evaluate."""
    steps = [
        p.step("train_data", TRAIN_DATA, {"seed": "seed", "generated": generated}),
        p.step("final_model", FINAL_MODEL, {"train_data": "train_data"}),
        p.step("eval_outputs", EVAL_OUTPUTS, {"final_model": "final_model"}),
    ]
    evaluate_upstream = {"eval_outputs": "eval_outputs"}
    if p.cfg.eval.reference == "base":
        steps.append(p.step("base_outputs", BASE_OUTPUTS))
        evaluate_upstream["base_outputs"] = "base_outputs"
    steps.append(p.step("evaluate", EVALUATE, evaluate_upstream))
    return steps
