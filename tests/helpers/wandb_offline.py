"""Read W&B offline runs back: which jobs a run folder holds, the artifacts each logged and used.

A ``run-<id>.wandb`` file is a LevelDB-style log of ``wandb_internal_pb2.Record`` protobufs (the format
``wandb sync`` uploads): a 7-byte file header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of chunks,
each with a 7-byte header (crc32c, length, type: full / first / middle / last). wandb >= 0.19 no longer ships a
Python reader, so this is one, for the tests (test double: reads what the real offline RunLogger wrote).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_FILE_HEADER = struct.Struct("<4sHB")
_CHUNK_HEADER = struct.Struct("<IHB")
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: Path) -> Iterator[bytes]:
    """The serialized records of one ``.wandb`` file, in order."""
    data = Path(path).read_bytes()
    ident, magic, version = _FILE_HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError(f"{path}: not a W&B run log (header {data[:7]!r})")
    pos, pending = _FILE_HEADER.size, b""
    while pos + _CHUNK_HEADER.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK_HEADER.size:  # the rest of a block too small for a header is padding
            pos += left
            continue
        _crc, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + _CHUNK_HEADER.size : pos + _CHUNK_HEADER.size + length]
        pos += _CHUNK_HEADER.size + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


@dataclass
class OfflineJob:
    path: Path
    name: str = ""
    job_type: str = ""
    group: str = ""
    logged: list[str] = field(default_factory=list)  # artifact names this job produced
    used: list[str] = field(default_factory=list)  # artifact names this job read
    digests: dict[str, str] = field(default_factory=dict)  # artifact name -> digest, logged and used
    history_keys: set[str] = field(default_factory=set)
    exit_code: int | None = None
    tags: list[str] = field(default_factory=list)
    config: dict[str, str] = field(default_factory=dict)  # top-level config key -> its value as JSON


def read_job(path: Path) -> OfflineJob:
    from wandb.proto import wandb_internal_pb2 as pb

    job = OfflineJob(path=Path(path))
    for data in read_records(path):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            job.name, job.job_type, job.group = record.run.display_name, record.run.job_type, record.run.run_group
            job.tags = list(record.run.tags)
            job.config.update({item.key: item.value_json for item in record.run.config.update})
        elif kind == "artifact":
            art = record.artifact
            (job.used if art.use_after_commit else job.logged).append(art.name)
            job.digests[art.name] = art.digest
        elif kind == "history":
            job.history_keys.update(item.key or "/".join(item.nested_key) for item in record.history.item)
        elif kind == "exit":
            job.exit_code = record.exit.exit_code
    return job


def read_jobs(folder: Path) -> list[OfflineJob]:
    """Every offline run under ``folder`` (a run folder, its ``wandb/`` folder, or one ``offline-run-*``)."""
    return [read_job(p) for p in sorted(Path(folder).rglob("run-*.wandb"))]
