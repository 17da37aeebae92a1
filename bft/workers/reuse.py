"""Shards a generation stage takes from an earlier artifact of the same stage instead of computing them again.

A shard's output is a function of the job (model, sampling, engine settings, run seed), its index and its input
lines alone (``bft.workers.job``). So when a data target reads the corpus in rounds (``bft.pipeline.target``), a
longer prefix of the corpus starts with the same shards as the shorter one before it, and those are taken over
(hard-linked, or copied) rather than generated again. Each stage records what its shards were made from in
``shards/inputs.json`` (the job's digest and a hash of each shard's input lines), which is how a later artifact
finds the shards it can take; it is the same whatever worker count made the shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bft.artifacts.integrity import file_sha256
from bft.artifacts.shards import iter_shards, shard_path
from bft.artifacts.store import write_json_atomic
from bft.workers.job import ShardJob

INPUTS_FILE = "inputs.json"
# what a shard's output does not depend on: where its files are, what the step is called, torch threads
_UNRELATED = ("stage", "source", "work", "threads")


def job_digest(job: ShardJob) -> str:
    what = {k: v for k, v in asdict(job).items() if k not in _UNRELATED}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:24]


def input_hashes(source: Path, shard_size: int) -> list[str]:
    """One hash per shard of ``source``: of the raw JSONL lines the shard is made from."""
    return [hashlib.sha256(b"".join(lines)).hexdigest()[:24] for _, lines in iter_shards(source, shard_size)]


def record_inputs(work: Path, digest: str, hashes: list[str]) -> None:
    write_json_atomic(work / "shards" / INPUTS_FILE, {"job": digest, "inputs": hashes})


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _take(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def adopt_shards(work: Path, digest: str, hashes: list[str], missing: list[int]) -> int:
    """Take every missing shard that a published artifact of the same stage (a sibling folder of ``work``) made
    from the same job and the same input lines; returns how many were taken."""
    wanted = set(missing)
    adopted = 0
    for inputs in sorted(work.parent.glob(f"*/shards/{INPUTS_FILE}")):
        folder = inputs.parent.parent
        data = _read(inputs)
        published = "." not in folder.name  # not <key>.partial (in the making) nor <key>.corrupt-* (moved aside)
        if folder == work or not published or not data or data.get("job") != digest:
            continue
        theirs = data.get("inputs") or []
        checksums = (_read(folder / "manifest.json") or {}).get("files", {})
        for index in sorted(wanted):
            if index >= len(theirs) or theirs[index] != hashes[index]:
                continue
            shard = shard_path(folder, index)
            expected = checksums.get(str(shard.relative_to(folder)))
            if shard.is_file() and expected is not None and file_sha256(shard) == expected:  # intact, as published
                _take(shard, shard_path(work, index))
                wanted.discard(index)
                adopted += 1
        if not wanted:
            break
    return adopted
