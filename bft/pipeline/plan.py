"""Which stages a composed config runs, in order, and how each one's upstream names map to earlier steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from bft.pipeline import stages as s


@dataclass(frozen=True)
class Step:
    name: str  # unique within a run, e.g. curate_1
    stage: s.Stage
    upstream: dict[str, str]  # logical input name -> earlier step name
    config: dict[str, Any]

    def __post_init__(self) -> None:
        """The upstream names must be exactly what the stage declares it reads (``name?`` = optional)."""
        required = {r for r in self.stage.reads if not r.endswith("?")}
        allowed = required | {r.removesuffix("?") for r in self.stage.reads}
        given = set(self.upstream)
        if not required <= given <= allowed:
            raise ValueError(f"step {self.name}: reads {sorted(given)}, but stage {self.stage.name} declares {self.stage.reads}")


def _stage(name: str, reads: tuple[str, ...], writes: tuple[str, ...], compute: s.Compute) -> s.Stage:
    return s.Stage(name=name, reads=reads, writes=writes, compute=compute)


SEED = _stage("seed", (), ("seed.jsonl",), s.compute_seed)
SEED_FULL = _stage("seed", (), ("seed.jsonl",), s.compute_full_seed)
CORPUS = _stage("corpus", (), ("corpus.jsonl",), s.compute_corpus)
BACKWARD_MODEL = _stage("backward_model", ("seed",), ("model/",), s.compute_backward_model)
AUGMENT = _stage("augment", ("corpus", "backward_model"), ("candidates.jsonl",), s.compute_augment)
SEED_MODEL = _stage("seed_model", ("seed",), ("model/",), s.compute_seed_model)
CURATE = _stage("curate", ("augment", "judge"), ("scored.jsonl", "curated.jsonl", "accounting.json"), s.compute_curate)
CURATION_MODEL = _stage("curation_model", ("seed", "curated"), ("model/",), s.compute_curation_model)
REWRITE = _stage("rewrite", ("curated", "rewriter?"), ("generated.jsonl",), s.compute_rewrite)
BASELINE_DATA = _stage("baseline_data", (), ("generated.jsonl",), s.compute_baseline_data)
TRAIN_DATA = _stage("train_data", ("seed", "generated"), ("train.jsonl", "decontaminated.jsonl"), s.compute_train_data)
FINAL_MODEL = _stage("final_model", ("train_data",), ("model/",), s.compute_final_model)
BASE_OUTPUTS = _stage("base_outputs", (), ("model_outputs.json",), s.compute_base_outputs)
EVAL_OUTPUTS = _stage("eval_outputs", ("final_model",), ("model_outputs.json",), s.compute_eval_outputs)
EVALUATE = _stage("evaluate", ("eval_outputs", "base_outputs?"), ("leaderboard.json",), s.compute_evaluate)


def _eval_generation(cfg: DictConfig) -> dict[str, Any]:
    keys = ("set", "max_instances", "temperature", "top_p", "max_new_tokens")
    return {k: s._plain(cfg.eval[k]) for k in keys} | {"generation": s._generation_key(cfg), "seed": cfg.run.seed}


def build_plan(cfg: DictConfig) -> list[Step]:
    data_policy = cfg.data.on_error
    seed_step = Step("seed", SEED, {}, {"seed": s._plain(cfg.seed), "run_seed": cfg.run.seed, "on_error": data_policy})
    if cfg.data.baseline_file:
        baseline = Step("baseline_data", BASELINE_DATA, {}, {"file": cfg.data.baseline_file, "on_error": data_policy})
        return [seed_step, baseline, *_training_and_eval(cfg, "baseline_data")]
    steps = [seed_step]
    if cfg.seed.size is not None and cfg.seed.size_scope == "forward":
        full = {**seed_step.config, "seed": {**seed_step.config["seed"], "size": None, "size_scope": "all"}}
        steps.append(Step("seed_full", SEED_FULL, {}, full))
    return [*steps, *_generation(cfg), *_training_and_eval(cfg, "rewrite")]


def _generation(cfg: DictConfig) -> list[Step]:
    """corpus -> backward model -> augment -> [seed model -> curate_i]* -> rewrite."""
    data_policy = cfg.data.on_error
    curation_cfg = {k: s._plain(v) for k, v in cfg.curation.items() if k not in ("enabled", "iterations")}
    backward_seed = "seed_full" if cfg.seed.size is not None and cfg.seed.size_scope == "forward" else "seed"
    steps = [
        Step("corpus", CORPUS, {}, {"corpus": s._plain(cfg.corpus), "on_error": data_policy}),
        Step("backward_model", BACKWARD_MODEL, {"seed": backward_seed}, s._training_key(cfg, "backward")),
        Step(
            "augment",
            AUGMENT,
            {"corpus": "corpus", "backward_model": "backward_model"},
            {"sampling": s._plain(cfg.generation.augment), "generation": s._generation_key(cfg), "seed": cfg.run.seed},
        ),
    ]
    curated = "augment"
    need_seed_model = cfg.curation.enabled or cfg.rewriter.name == "seed_model"
    if need_seed_model:
        steps.append(Step("seed_model", SEED_MODEL, {"seed": "seed"}, s._training_key(cfg, "seed")))
    if cfg.curation.enabled:
        judge = "seed_model"
        curate_key = {"curation": curation_cfg, "generation": s._generation_key(cfg), "seed": cfg.run.seed}
        for i in range(cfg.curation.iterations):
            if i > 0:
                model_step = f"curation_model_{i}"
                steps.append(Step(model_step, CURATION_MODEL, {"seed": "seed", "curated": curated}, s._training_key(cfg, "seed")))
                judge = model_step
            steps.append(Step(f"curate_{i}", CURATE, {"augment": "augment", "judge": judge}, curate_key))
            curated = f"curate_{i}"
    rewrite_upstream = {"curated": curated}
    if cfg.rewriter.name == "seed_model":
        rewrite_upstream["rewriter"] = "seed_model"
    rewrite_key = (
        {"name": "none"}
        if cfg.rewriter.name == "none"
        else {"rewriter": s._plain(cfg.rewriter), "generation": s._generation_key(cfg), "seed": cfg.run.seed}
    )
    steps.append(Step("rewrite", REWRITE, rewrite_upstream, rewrite_key))
    return steps


def _training_and_eval(cfg: DictConfig, generated: str) -> list[Step]:
    """train_data -> final model -> eval outputs (+ base outputs) -> evaluate."""
    steps = [
        Step(
            "train_data",
            TRAIN_DATA,
            {"seed": "seed", "generated": generated},
            {
                "seed_tag": cfg.sft.seed_tag,
                "web_tag": cfg.sft.web_tag,
                "eval_set": cfg.eval.set,
                "eval_max_instances": cfg.eval.max_instances,
                "max_generated": cfg.data.max_generated,
                "seed": cfg.run.seed,
            },
        ),
        Step("final_model", FINAL_MODEL, {"train_data": "train_data"}, s._training_key(cfg, "final")),
        Step("eval_outputs", EVAL_OUTPUTS, {"final_model": "final_model"}, _eval_generation(cfg) | {"tag": cfg.eval.inference_tag}),
    ]
    evaluate_upstream = {"eval_outputs": "eval_outputs"}
    if cfg.eval.reference == "base":
        steps.append(Step("base_outputs", BASE_OUTPUTS, {}, _eval_generation(cfg) | {"model": s._plain(cfg.model)}))
        evaluate_upstream["base_outputs"] = "base_outputs"
    evaluate_key = {k: s._plain(cfg.eval[k]) for k in ("annotator", "judge_model", "reference", "lc_weights_dir")}
    steps.append(Step("evaluate", EVALUATE, evaluate_upstream, evaluate_key | {"seed": cfg.run.seed}))
    return steps
