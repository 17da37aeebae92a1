"""Resumable, sharded processing of a record list: each shard is written atomically once complete."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bft.data.io import read_jsonl, write_jsonl_atomic

Record = dict[str, Any]


def shard_path(work: Path, index: int) -> Path:
    return work / "shards" / f"shard-{index:05d}.jsonl"


def run_sharded(
    records: list[Record],
    work: Path,
    shard_size: int,
    process: Callable[[list[Record], int], list[Record]],
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Record], int]:
    """Apply ``process(shard_records, shard_index)`` shard by shard, skipping shards already on disk.

    Returns all output records (in shard order) and the number of shards that were reused.
    ``process`` must be deterministic for a given shard index (seed it with the index) so that a resumed
    run equals an uninterrupted one.
    """
    (work / "shards").mkdir(parents=True, exist_ok=True)
    outputs: list[Record] = []
    reused = 0
    n_shards = max(1, -(-len(records) // shard_size)) if records else 0
    for index in range(n_shards):
        path = shard_path(work, index)
        if path.exists():
            outputs.extend(read_jsonl(path))
            reused += 1
        else:
            chunk = records[index * shard_size : (index + 1) * shard_size]
            result = process(chunk, index)
            write_jsonl_atomic(path, result)
            outputs.extend(result)
        if on_progress:
            on_progress(index + 1, n_shards)
    return outputs, reused
