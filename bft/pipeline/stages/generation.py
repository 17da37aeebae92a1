"""Generation stages: augment (the backward model writes an instruction for each document) and curate (a curation
model rates each pair on the 1-5 rubric and the best are kept). Both hand their pairs on as ``pairs``."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from omegaconf import DictConfig

from bft.artifacts.shards import run_sharded
from bft.artifacts.store import Artifact, StageOutput
from bft.config.schema import CurationConfig
from bft.data.io import read_jsonl, write_jsonl_atomic
from bft.pipeline.models import backend_for, model_ref
from bft.pipeline.stage import ENGINE, Stage, shard_seed
from bft.pipeline.stages.common import Record, progress


def compute_augment(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.generation.base import Sampling
    from bft.parsers import parse_instruction
    from bft.prompts import backtranslation_prompt, render_chat

    docs = read_jsonl(upstream["corpus"].file("corpus.jsonl"))
    backend, tokenizer = backend_for(c.generation, *model_ref(upstream["backward_model"]))
    aug = c.generation.augment
    sampling = Sampling(temperature=aug.temperature, top_p=aug.top_p, max_new_tokens=aug.max_new_tokens)
    backward_key = upstream["backward_model"].key

    def process(shard: list[Record], index: int) -> list[Record]:
        prompts = [render_chat(tokenizer, backtranslation_prompt(d["text"]))[0] for d in shard]
        completions = backend.generate(prompts, sampling, shard_seed(c.run.seed, "augment", index))
        return [
            {**d, "instruction": parse_instruction(x.text), "backward_raw": x.text, "backward_model": backward_key}
            for d, x in zip(shard, completions, strict=True)
        ]

    records, reused = run_sharded(docs, work, c.generation.shard_size, process, progress("augment"))
    candidates = [r for r in records if r["instruction"]]
    write_jsonl_atomic(work / "candidates.jsonl", candidates)
    return StageOutput(
        counts={"in": len(docs), "out": len(candidates), "empty_instructions": len(records) - len(candidates)},
        metrics={"shards_reused": reused, **backend.stats()},
    )


def labels_path(name: str) -> Path:
    """``curation.labels``: a JSONL path, or ``embedded`` for the 20 hand-labelled pairs shipped with bft."""
    if name == "embedded":
        from bft.data.embedded import embedded_file

        return Path(str(embedded_file("labels.jsonl")))
    return Path(name)


def compute_curate(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.curation.metrics import binarize_labels, curation_accounting, selection_quality
    from bft.curation.score import score_pairs
    from bft.curation.select import select

    cur = c.curation
    candidates = read_jsonl(upstream["augment"].export("pairs"))
    judge = upstream["judge"]
    backend, tokenizer = backend_for(c.generation, *model_ref(judge))

    def process(shard: list[Record], index: int) -> list[Record]:
        scored = score_pairs(shard, backend, tokenizer, cur, shard_seed(c.run.seed, "curate", index))
        return [{**r, "judge_model": judge.key, "scoring": cur.scoring} for r in scored]

    scored, reused = run_sharded(candidates, work, c.generation.shard_size, process, progress("curate"))
    keep = select(scored, cur.threshold, cur.top_k, cur.top_fraction)
    for record, kept in zip(scored, keep, strict=True):
        record["kept"] = kept
    write_jsonl_atomic(work / "scored.jsonl", scored)
    curated = [r for r in scored if r["kept"]]
    write_jsonl_atomic(work / "curated.jsonl", curated)
    accounting = curation_accounting(scored, keep)
    if cur.labels:
        from bft.data.io import read_records

        labelled = read_records(labels_path(cur.labels), required={"instruction": str, "output": str}).records
        pairs = [{"instruction": r["instruction"], "text": r["output"]} for r in labelled]
        label_scores = score_pairs(pairs, backend, tokenizer, cur, shard_seed(c.run.seed, "labels", 0))
        label_keep = select(label_scores, cur.threshold, cur.top_k, cur.top_fraction)
        labels = binarize_labels([r["label"] for r in labelled])
        accounting["labels"] = selection_quality(labels, label_keep, [r.get("score") for r in label_scores])
    (work / "accounting.json").write_text(json.dumps(accounting, indent=2))
    return StageOutput(
        counts={"in": len(candidates), "out": len(curated)},
        metrics={**accounting, "shards_reused": reused, **backend.stats()},
    )


AUGMENT = Stage(
    "augment",
    ("corpus", "backward_model"),
    ("candidates.jsonl",),
    (*ENGINE, "generation.augment", "run.seed"),
    compute_augment,
    exports={"pairs": "candidates.jsonl"},
)
# curation.enabled and curation.iterations shape the plan (bft.pipeline.plan), not one curate step.
CURATION_SETTINGS = tuple(f"curation.{f.name}" for f in fields(CurationConfig) if f.name not in ("enabled", "iterations"))
CURATE = Stage(
    "curate",
    ("augment", "judge"),
    ("scored.jsonl", "curated.jsonl", "accounting.json"),
    (*CURATION_SETTINGS, *ENGINE, "run.seed"),
    compute_curate,
    exports={"pairs": "curated.jsonl"},
)
