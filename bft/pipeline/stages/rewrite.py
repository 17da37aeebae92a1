"""The rewrite stage, in the three forms ``rewriter.source`` selects (``bft.rewriter.source``): an aligned model
rewrites each kept pair, M0 does (BFT's ablation), or the kept document text is the answer (filtering only). All
read the ``pairs`` their upstream (augment or curate) exports and write ``generated.jsonl``."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bft.artifacts.shards import run_sharded
from bft.artifacts.store import Artifact, StageOutput
from bft.config.schema import RewriterConfig
from bft.data.io import read_jsonl, write_jsonl_atomic
from bft.errors import PipelineError
from bft.pipeline.models import backend_for, model_ref
from bft.pipeline.stage import ENGINE, Stage, shard_seed
from bft.pipeline.stages.common import Record, progress


def _pairs(upstream: dict[str, Artifact]) -> list[Record]:
    source = upstream["pairs"]
    pairs = read_jsonl(source.export("pairs"))
    if not pairs:
        raise PipelineError(f"{source.stage}: 0 pairs left to train on; lower curation.threshold or use curation.top_fraction")
    return pairs


def _write(work: Path, n_in: int, generated: list[Record], metrics: dict[str, Any]) -> StageOutput:
    kept = [r for r in generated if r["output"]]
    write_jsonl_atomic(work / "generated.jsonl", kept)
    return StageOutput(counts={"in": n_in, "out": len(kept), "unparsed": len(generated) - len(kept)}, metrics=metrics)


def _rewrite(c: DictConfig, pairs: list[Record], work: Path, name: str, adapter: str | None) -> StageOutput:
    from bft.rewriter.rewrite import rewrite_pairs

    backend, tokenizer = backend_for(c.generation, name, adapter)

    def process(shard: list[Record], index: int) -> list[Record]:
        return rewrite_pairs(shard, backend, tokenizer, c.rewriter, shard_seed(c.run.seed, "rewrite", index), name)

    generated, reused = run_sharded(pairs, work, c.generation.shard_size, process, progress("rewrite"))
    return _write(work, len(pairs), generated, {"shards_reused": reused, **backend.stats()})


def compute_rewrite_by_model(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    return _rewrite(c, _pairs(upstream), work, c.rewriter.name, None)


def compute_rewrite_by_seed_model(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    return _rewrite(c, _pairs(upstream), work, *model_ref(upstream["rewriter"]))


def compute_keep_text(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    pairs = _pairs(upstream)
    return _write(work, len(pairs), [{**p, "output": p["text"], "rewriter": "none"} for p in pairs], {"shards_reused": 0})


_SAMPLING = tuple(f"rewriter.{f.name}" for f in fields(RewriterConfig) if f.name != "name")
_EXPORTS = {"generated": "generated.jsonl"}
REWRITE_BY_MODEL = Stage(
    "rewrite",
    ("pairs",),
    ("generated.jsonl",),
    (*_SAMPLING, "rewriter.name", *ENGINE, "run.seed"),
    compute_rewrite_by_model,
    exports=_EXPORTS,
)
REWRITE_BY_SEED_MODEL = Stage(
    "rewrite",
    ("pairs", "rewriter"),
    ("generated.jsonl",),
    (*_SAMPLING, *ENGINE, "run.seed"),
    compute_rewrite_by_seed_model,
    exports=_EXPORTS,
)
KEEP_TEXT = Stage("rewrite", ("pairs",), ("generated.jsonl",), (), compute_keep_text, exports=_EXPORTS)  # reads no setting
