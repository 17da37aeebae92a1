"""Evaluation stages: the final model's (and the untuned base's) answers to the eval set, and the judged win rate."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from bft.artifacts.shards import run_sharded
from bft.artifacts.store import Artifact, StageOutput
from bft.errors import PipelineError
from bft.pipeline.models import backend_for, model_ref
from bft.pipeline.stage import ENGINE, Stage, shard_seed
from bft.pipeline.stages.common import Record, progress


def _answer_eval_set(c: DictConfig, work: Path, name: str, adapter: str | None, tag: str | None, generator: str) -> StageOutput:
    from bft.eval.sets import load_eval_set
    from bft.generation.base import Sampling
    from bft.prompts import render_chat, with_tag

    rows = load_eval_set(c.eval.set, c.eval.max_instances)
    backend, tokenizer = backend_for(c.generation, name, adapter)
    sampling = Sampling(temperature=c.eval.temperature, top_p=c.eval.top_p, max_new_tokens=c.eval.max_new_tokens)

    def process(shard: list[Record], index: int) -> list[Record]:
        prompts = [render_chat(tokenizer, with_tag(r["instruction"], tag))[0] for r in shard]
        completions = backend.generate(prompts, sampling, shard_seed(c.run.seed, "eval", index))
        return [
            {
                "instruction": r["instruction"],
                "output": x.text.strip(),
                "generator": generator,
                "dataset": r.get("dataset", c.eval.set),
            }
            for r, x in zip(shard, completions, strict=True)
        ]

    outputs, reused = run_sharded(rows, work, c.generation.shard_size, process, progress("eval outputs"))
    (work / "model_outputs.json").write_text(json.dumps(outputs, indent=2, ensure_ascii=False))
    return StageOutput(counts={"in": len(rows), "out": len(outputs)}, metrics={"shards_reused": reused, **backend.stats()})


def compute_eval_outputs(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    name, adapter = model_ref(upstream["final_model"])
    generator = f"bft-{c.run.name}-{upstream['final_model'].key}"
    return _answer_eval_set(c, work, name, adapter, c.eval.inference_tag, generator)


def compute_base_outputs(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    """The final model's base, untuned: the ``eval.reference=base`` baseline."""
    name = c.final_model.name
    return _answer_eval_set(c, work, name, None, None, f"base-{Path(name).name}")


def reference_outputs(c: DictConfig, upstream: dict[str, Artifact]) -> list[Record]:
    from bft.eval.sets import load_eval_set

    if c.eval.reference == "base":
        return json.loads(upstream["base_outputs"].file("model_outputs.json").read_text())
    if c.eval.reference == "dataset":
        return load_eval_set(c.eval.set, c.eval.max_instances)
    path = Path(c.eval.reference)
    for candidate in [path, path / "model_outputs.json", path / "eval" / "model_outputs.json"]:
        if candidate.is_file():
            return json.loads(candidate.read_text())
    raise PipelineError(f"eval.reference: no model_outputs.json at {path} (use base, dataset or a run folder)")


def compute_evaluate(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.eval.score import score_outputs

    outputs = json.loads(upstream["eval_outputs"].file("model_outputs.json").read_text())
    references = reference_outputs(c, upstream)
    (work / "model_outputs.json").write_text(json.dumps(outputs, indent=2, ensure_ascii=False))
    (work / "reference_outputs.json").write_text(json.dumps(references, indent=2, ensure_ascii=False))
    result = score_outputs(
        outputs,
        references,
        c.eval.annotator,
        work,
        judge_model=c.eval.judge_model,
        seed=c.run.seed,
        lc_weights_dir=c.eval.lc_weights_dir,
    )
    return StageOutput(counts={"in": len(outputs), "out": len(outputs)}, metrics=dict(result))


_ANSWERING = (*(f"eval.{k}" for k in ("set", "max_instances", "temperature", "top_p", "max_new_tokens")), *ENGINE, "run.seed")
EVAL_OUTPUTS = Stage(
    "eval_outputs",
    ("final_model",),
    ("model_outputs.json",),
    (*_ANSWERING, "eval.inference_tag", "run.name"),
    compute_eval_outputs,
)
BASE_OUTPUTS = Stage("base_outputs", (), ("model_outputs.json",), (*_ANSWERING, "final_model.name"), compute_base_outputs)
EVALUATE = Stage(
    "evaluate",
    ("eval_outputs", "base_outputs?"),
    ("leaderboard.json",),
    (*(f"eval.{k}" for k in ("annotator", "judge_model", "reference", "lc_weights_dir", "set", "max_instances")), "run.seed"),
    compute_evaluate,
)
