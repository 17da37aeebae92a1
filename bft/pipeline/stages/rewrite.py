"""The rewrite stage, in the three forms ``rewriter.source`` selects (``bft.rewriter.source``): an aligned model
rewrites each kept pair (the ``answer_rewrite`` task), M0 does (BFT's ablation), or the kept document text is the
answer (filtering only). All read the ``pairs`` their upstream (augment or curate) exports and write
``generated.jsonl``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bft.artifacts.shards import iter_outputs, write_jsonl_counted
from bft.artifacts.store import Artifact, StageOutput
from bft.config.schema import RewriterConfig
from bft.data.io import read_jsonl
from bft.errors import NoPairsError
from bft.pipeline.models import model_ref
from bft.pipeline.stage import ENGINE, PLACEMENT, WORKERS, Stage
from bft.pipeline.stages.common import Record


def _no_pairs(source: Artifact) -> NoPairsError:
    return NoPairsError(f"{source.stage}: 0 pairs left to train on; lower curation.threshold or use curation.top_fraction")


def _write(work: Path, n_in: int, generated: Iterable[Record], metrics: dict[str, Any]) -> StageOutput:
    """Stream the answered pairs into ``generated.jsonl``; count how each rewrite ended (parsed, truncated at
    ``max_new_tokens``, unparsed) apart from how many were dropped."""
    from bft.tasks.answer_rewrite import TASK

    statuses: dict[str, int] = {}  # parsed, truncated, unparsed: all 0 when no model rewrote (rewriter=none)
    out = write_jsonl_counted(work / "generated.jsonl", (r for r in TASK.counting(generated, statuses) if r["output"]))
    counts = {"in": n_in, "out": out, "dropped": n_in - out, **statuses}
    return StageOutput(counts=counts, metrics=metrics)


def _rewrite(c: DictConfig, upstream: dict[str, Artifact], work: Path, name: str, adapter: str | None) -> StageOutput:
    """The rewriter answers each pair, shard by shard, by the workers ``workers`` asks for (bft.workers)."""
    from bft.tasks.answer_rewrite import TASK, Settings
    from bft.tasks.base import settings_from
    from bft.workers import run_stage, stage_job

    source = upstream["pairs"]
    settings = settings_from(Settings, c.rewriter, model_name=name)
    run = run_stage(
        stage_job(c.generation, c.run.seed, "rewrite", TASK, settings, source.export("pairs"), work, (name, adapter)), c.workers
    )
    if not run.n_records:
        raise _no_pairs(source)
    return _write(work, run.n_records, iter_outputs(work, run.n_shards), {"shards_reused": run.reused, **run.metrics})


def compute_rewrite_by_model(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    return _rewrite(c, upstream, work, c.rewriter.name, None)


def compute_rewrite_by_seed_model(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    return _rewrite(c, upstream, work, *model_ref(upstream["rewriter"]))


def compute_keep_text(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    pairs = read_jsonl(upstream["pairs"].export("pairs"))
    if not pairs:
        raise _no_pairs(upstream["pairs"])
    return _write(work, len(pairs), [{**p, "output": p["text"], "rewriter": "none"} for p in pairs], {"shards_reused": 0})


_SAMPLING = tuple(f"rewriter.{f.name}" for f in fields(RewriterConfig) if f.name != "name")
_EXPORTS = {"generated": "generated.jsonl"}
REWRITE_BY_MODEL = Stage(
    "rewrite",
    ("pairs",),
    ("generated.jsonl",),
    (*_SAMPLING, "rewriter.name", *ENGINE, "run.seed", *WORKERS),
    compute_rewrite_by_model,
    unkeyed=PLACEMENT,
    exports=_EXPORTS,
    version=1,
)
REWRITE_BY_SEED_MODEL = Stage(
    "rewrite",
    ("pairs", "rewriter"),
    ("generated.jsonl",),
    (*_SAMPLING, *ENGINE, "run.seed", *WORKERS),
    compute_rewrite_by_seed_model,
    unkeyed=PLACEMENT,
    exports=_EXPORTS,
    version=1,
)
KEEP_TEXT = Stage("rewrite", ("pairs",), ("generated.jsonl",), (), compute_keep_text, exports=_EXPORTS, version=1)  # no setting
