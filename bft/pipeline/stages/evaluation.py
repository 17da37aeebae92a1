"""Evaluation stages: the final model's (and the untuned base's) answers to the eval set, and the judged win rate."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from bft.artifacts.shards import iter_outputs, write_jsonl_counted
from bft.artifacts.store import Artifact, StageOutput
from bft.errors import PipelineError
from bft.pipeline.models import model_ref
from bft.pipeline.stage import DEVICE, ENGINE, PLACEMENT, WORKERS, Stage
from bft.pipeline.stages.common import Record


def _answer_eval_set(
    c: DictConfig, stage: str, work: Path, name: str, adapter: str | None, tag: str | None, generator: str
) -> StageOutput:
    """The model's answers to the eval set (the ``eval_answer`` task), shard by shard, by the workers ``workers``
    asks for (bft.workers)."""
    from bft.eval.sets import load_eval_set
    from bft.tasks.base import settings_from
    from bft.tasks.eval_answer import TASK, Settings
    from bft.workers import run_stage, stage_job

    source = work / "workers" / "inputs.jsonl"
    inputs = write_jsonl_counted(source, load_eval_set(c.eval.set, c.eval.max_instances))
    settings = settings_from(Settings, c.eval, tag=tag, generator=generator, eval_set=c.eval.set)
    run = run_stage(stage_job(c.generation, c.run.seed, stage, TASK, settings, source, work, (name, adapter)), c.workers)
    outputs = list(iter_outputs(work, run.n_shards))
    (work / "model_outputs.json").write_text(json.dumps(outputs, indent=2, ensure_ascii=False))
    return StageOutput(counts={"in": inputs, "out": len(outputs)}, metrics={"shards_reused": run.reused, **run.metrics})


def compute_eval_outputs(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    name, adapter = model_ref(upstream["final_model"])
    generator = f"bft-{c.run.name}-{upstream['final_model'].key}"
    return _answer_eval_set(c, "eval_outputs", work, name, adapter, c.eval.inference_tag, generator)


def compute_base_outputs(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    """The final model's base, untuned: the ``eval.reference=base`` baseline."""
    name = c.final_model.name
    return _answer_eval_set(c, "base_outputs", work, name, None, None, f"base-{Path(name).name}")


def reference_outputs(c: DictConfig, upstream: dict[str, Artifact]) -> list[Record]:
    from bft.eval.sets import load_eval_set

    if c.eval.reference == "base":
        return json.loads(upstream["base_outputs"].file("model_outputs.json").read_text())
    if c.eval.reference == "dataset":
        return load_eval_set(c.eval.set, c.eval.max_instances)
    from bft.config.validate import reference_outputs_file  # the same search the config check ran before any work

    found = reference_outputs_file(c.eval.reference)
    if found is None:
        raise PipelineError(f"eval.reference: no model_outputs.json at {c.eval.reference} (use base, dataset or a run folder)")
    return json.loads(found.read_text())


def compute_evaluate(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.config.machine import resolve_device
    from bft.eval.endpoint import endpoint_for
    from bft.eval.judges import release_judges
    from bft.eval.score import score_outputs

    endpoint = endpoint_for(c.eval.annotator, c.eval.judge_url, c.eval.judge_model, c.eval.judge_api_key_env, c.eval.judge_api_scheme)
    outputs = json.loads(upstream["eval_outputs"].file("model_outputs.json").read_text())
    references = reference_outputs(c, upstream)
    local = c.eval.annotator == "local"
    device = resolve_device(c.generation.device) if local else None  # the local judge runs where generation does
    try:
        result = score_outputs(
            outputs,
            references,
            c.eval.annotator,
            work,
            judge_model=c.eval.judge_model,
            judge_orders=c.eval.judge_orders,
            judge_device=device or "auto",
            seed=c.run.seed,
            lc_weights_dir=c.eval.lc_weights_dir,
            endpoint=endpoint,
        )
    finally:
        release_judges()  # the judge model leaves memory (GPU memory included) with the stage
    metrics = dict(result) | ({"device": device} if device else {})
    return StageOutput(counts={"in": len(outputs), "out": len(outputs)}, metrics=metrics)


_ANSWERING = (*(f"eval.{k}" for k in ("set", "max_instances", "temperature", "top_p", "max_new_tokens")), *ENGINE, "run.seed")
EVAL_OUTPUTS = Stage(
    "eval_outputs",
    ("final_model",),
    ("model_outputs.json",),
    (*_ANSWERING, "eval.inference_tag", "run.name", *WORKERS),
    compute_eval_outputs,
    unkeyed=PLACEMENT,
    version=1,
)
BASE_OUTPUTS = Stage(
    "base_outputs",
    (),
    ("model_outputs.json",),
    (*_ANSWERING, "final_model.name", *WORKERS),
    compute_base_outputs,
    unkeyed=PLACEMENT,
    version=1,
)
EVALUATE = Stage(
    "evaluate",
    ("eval_outputs", "base_outputs?"),
    ("leaderboard.json",),
    (
        *(f"eval.{k}" for k in ("annotator", "judge_model", "judge_orders", "reference", "lc_weights_dir", "set", "max_instances")),
        *(f"eval.{k}" for k in ("judge_url", "judge_api_key_env", "judge_api_scheme")),
        "run.seed",
        *DEVICE,
    ),
    compute_evaluate,
    unkeyed=DEVICE,
    version=1,
)
