"""Resumable, sharded processing of records: each shard is written atomically once complete.

A stage's work folder holds ``shards/shard-NNNNN.jsonl``; shard ``i`` holds the outputs of input records
``i*shard_size .. (i+1)*shard_size`` and is processed with a seed derived from ``i`` alone, so any process (one
in-process loop, or many workers, in any order) writes the same bytes. Inputs are read lazily from a JSONL file and
outputs are streamed back shard by shard, so memory stays flat as the corpus grows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from bft.data.io import read_jsonl, write_jsonl_atomic

Record = dict[str, Any]


def shard_path(work: Path, index: int) -> Path:
    return work / "shards" / f"shard-{index:05d}.jsonl"


def shard_seed(run_seed: int, stage: str, index: int) -> int:
    """The sampling seed of shard ``index`` of ``stage``: a function of the run seed and the index only."""
    return (run_seed * 1_000_003 + sum(map(ord, stage)) * 7919 + index) % (2**31)


def n_shards_for(n_records: int, shard_size: int) -> int:
    return max(1, -(-n_records // shard_size)) if n_records else 0


def count_records(path: Path) -> int:
    """Non-blank lines of a JSONL file (what :func:`iter_shards` will yield), read in blocks."""
    count = 0
    with Path(path).open("rb") as handle:
        for line in handle:
            if line.strip():
                count += 1
    return count


def iter_shards(path: Path, shard_size: int) -> Iterator[tuple[int, list[bytes]]]:
    """Yield ``(index, raw JSONL lines)`` per shard of ``path``, holding one shard in memory at a time."""
    lines: list[bytes] = []
    index = 0
    with Path(path).open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            lines.append(line)
            if len(lines) == shard_size:
                yield index, lines
                index, lines = index + 1, []
    if lines:
        yield index, lines


def parse_lines(lines: list[bytes]) -> list[Record]:
    return [json.loads(line) for line in lines]


def missing_shards(work: Path, n_shards: int) -> list[int]:
    return [i for i in range(n_shards) if not shard_path(work, i).exists()]


def iter_outputs(work: Path, n_shards: int) -> Iterator[Record]:
    """Every output record, in shard order, reading one shard file at a time."""
    for index in range(n_shards):
        yield from read_jsonl(shard_path(work, index))


def remove_stale_temp_files(work: Path) -> int:
    """Delete half-written shard temp files a killed process left behind (call once every shard is in)."""
    stale = list((work / "shards").glob(".shard-*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def run_sharded(
    records: list[Record],
    work: Path,
    shard_size: int,
    process: Callable[[list[Record], int], list[Record]],
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Record], int]:
    """Apply ``process(shard_records, shard_index)`` shard by shard to an in-memory list, skipping shards on disk.

    Returns all output records (in shard order) and the number of shards that were reused. ``process`` must be
    deterministic for a given shard index (seed it with the index) so that a resumed run equals an uninterrupted
    one. Pipeline stages use :mod:`bft.workers` instead, which streams from a file and can use many workers.
    """
    (work / "shards").mkdir(parents=True, exist_ok=True)
    outputs: list[Record] = []
    reused = 0
    n_shards = n_shards_for(len(records), shard_size)
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


def write_jsonl_counted(path: Path, records: Iterable[Record]) -> int:
    """Stream ``records`` into ``path`` atomically; return how many were written."""
    count = 0

    def counted() -> Iterator[Record]:
        nonlocal count
        for record in records:
            count += 1
            yield record

    write_jsonl_atomic(path, counted())
    return count
