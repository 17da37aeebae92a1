"""Generation stages: augment (the backward model writes an instruction for each document: the
``instruction_backtranslation`` task) and curate (a curation model rates each pair on the 1-5 rubric, the
``pair_rating`` task, and the best are kept). Both hand their pairs on as ``pairs``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

from omegaconf import DictConfig

from bft.artifacts.shards import iter_outputs, write_jsonl_counted
from bft.artifacts.store import Artifact, StageOutput
from bft.config.schema import CurationConfig
from bft.data.io import write_jsonl_atomic
from bft.pipeline.models import backend_for, model_ref
from bft.pipeline.stage import ENGINE, PLACEMENT, WORKERS, Stage, shard_seed


def compute_augment(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    """Self-augmentation over the corpus, shard by shard, by the workers ``workers`` asks for (bft.workers)."""
    from bft.tasks.base import settings_from
    from bft.tasks.instruction_backtranslation import TASK, Settings
    from bft.workers import run_stage, stage_job

    backward = upstream["backward_model"]
    settings = settings_from(Settings, c.generation.augment, model_key=backward.key)
    corpus = upstream["corpus"].file("corpus.jsonl")
    run = run_stage(stage_job(c.generation, c.run.seed, "augment", TASK, settings, corpus, work, model_ref(backward)), c.workers)
    ended: dict[str, int] = {}  # unfinished_instructions (cut at max_new_tokens), empty_instructions
    pairs = (r for r in TASK.counting(iter_outputs(work, run.n_shards), ended) if r["instruction"])
    kept = write_jsonl_counted(work / "candidates.jsonl", pairs)
    return StageOutput(
        counts={"in": run.n_records, "out": kept, **ended},
        metrics={"shards_reused": run.reused, **run.metrics},
    )


def labels_path(name: str) -> Path:
    """``curation.labels``: a JSONL path, or ``embedded`` for the 20 hand-labelled pairs shipped with bft."""
    if name == "embedded":
        from bft.data.embedded import embedded_file

        return Path(str(embedded_file("labels.jsonl")))
    return Path(name)


def compute_curate(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.curation.metrics import binarize_labels, curation_accounting, selection_quality
    from bft.curation.select import select
    from bft.tasks.base import settings_from
    from bft.tasks.pair_rating import TASK, Settings
    from bft.workers import run_stage, stage_job

    cur = c.curation
    judge = upstream["judge"]
    settings = settings_from(Settings, cur, judge_model=judge.key)
    pairs_in = upstream["augment"].export("pairs")
    run = run_stage(stage_job(c.generation, c.run.seed, "curate", TASK, settings, pairs_in, work, model_ref(judge)), c.workers)
    # Selecting the top fraction needs every score, not every record: the records are read from the shards again.
    scores, lengths, ended = [], [], {}  # ended: unfinished_ratings (cut at max_new_tokens: no score)
    for record in TASK.counting(iter_outputs(work, run.n_shards), ended):
        scores.append(record.get("score"))
        lengths.append(len(record["text"]))
    keep = select(scores, cur.threshold, cur.top_k, cur.top_fraction)

    def flagged() -> Iterator[dict]:
        for record, kept in zip(iter_outputs(work, run.n_shards), keep, strict=True):
            yield {**record, "kept": kept}

    write_jsonl_atomic(work / "scored.jsonl", flagged())
    write_jsonl_atomic(work / "curated.jsonl", (r for r in flagged() if r["kept"]))
    accounting = curation_accounting(scores, lengths, keep, ended["unfinished_ratings"])
    if cur.labels:
        from bft.data.io import read_records

        labelled = read_records(labels_path(cur.labels), required={"instruction": str, "output": str}).records
        pairs = [{"instruction": r["instruction"], "text": r["output"]} for r in labelled]
        backend, tokenizer = run.backend or backend_for(c.generation, *model_ref(judge))
        label_scores = TASK.run(pairs, settings, backend, tokenizer, shard_seed(c.run.seed, "labels", 0))
        label_keep = select([r.get("score") for r in label_scores], cur.threshold, cur.top_k, cur.top_fraction)
        labels = binarize_labels([r["label"] for r in labelled])
        accounting["labels"] = selection_quality(labels, label_keep, [r.get("score") for r in label_scores])
    (work / "accounting.json").write_text(json.dumps(accounting, indent=2))
    return StageOutput(
        counts={"in": run.n_records, "out": sum(keep)},
        metrics={**accounting, "shards_reused": run.reused, **run.metrics},
    )


AUGMENT = Stage(
    "augment",
    ("corpus", "backward_model"),
    ("candidates.jsonl",),
    (*ENGINE, "generation.augment", "run.seed", *WORKERS),
    compute_augment,
    unkeyed=PLACEMENT,
    exports={"pairs": "candidates.jsonl"},
    version=1,
)
# curation.enabled and curation.iterations shape the plan (bft.pipeline.plan), not one curate step.
CURATION_SETTINGS = tuple(f"curation.{f.name}" for f in fields(CurationConfig) if f.name not in ("enabled", "iterations"))
CURATE = Stage(
    "curate",
    ("augment", "judge"),
    ("scored.jsonl", "curated.jsonl", "accounting.json"),
    (*CURATION_SETTINGS, *ENGINE, "run.seed", *WORKERS),
    compute_curate,
    unkeyed=PLACEMENT,
    exports={"pairs": "curated.jsonl"},
    version=1,
)
