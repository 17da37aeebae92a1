"""What an artifact's manifest records about each of its files, and the two ways to check a file against it.

Each file is hashed once, when its artifact is published: its sha256 (``manifest["files"]``), its size and a
*sampled digest* (``manifest["file_stats"]``): the sha256 of the size and of ``SAMPLE_BLOCKS`` blocks of
``SAMPLE_BLOCK`` bytes spread evenly over the file, first and last block included (the whole file when it is
smaller than that).

- ``quick_check`` (every reuse, bounded time): every file must exist with its recorded size (catches truncation,
  a partial copy, a missing shard); the small files are hashed in full, smallest first, while their total stays
  within ``FULL_CHECK_BUDGET`` and each is at most ``BIG_FILE``; every other file gets its sampled digest compared
  (about 1 MiB read, whatever the size: catches a file replaced or overwritten by another of the same size, a
  zeroed region over a sampled block, a header rewritten). A 140 GB model folder is checked in well under a second
  instead of two minutes of hashing.
- ``full_check`` (``bft verify``): the sha256 of every byte. The only check that catches a flipped bit between
  sampled blocks (disk rot): run it on a store you copied or suspect, not on every reuse.

Why a sampled digest and not size + mtime: mtime changes whenever a store is copied or synced without ``-t``
(a shared store moved to scratch, an rsync to another cluster) and then every reuse would hash 140 GB again; and an
mtime says nothing about a file overwritten in place by a tool that restores it. The samples are checked against
content, wherever the file has been.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLE_BLOCKS = 16
SAMPLE_BLOCK = 64 * 1024
BIG_FILE = 64 * 1024 * 1024  # above this a file is only sampled on reuse
FULL_CHECK_BUDGET = 256 * 1024 * 1024  # bytes of small files hashed in full on one reuse, smallest first
READ_BLOCK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(READ_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def sample_offsets(size: int) -> list[int]:
    """Where the sampled blocks start: evenly spaced, the first at 0 and the last ending at the file's end."""
    if size <= SAMPLE_BLOCKS * SAMPLE_BLOCK:
        return [0]  # read whole (one block of up to SAMPLE_BLOCKS * SAMPLE_BLOCK bytes)
    last = size - SAMPLE_BLOCK
    return [last * i // (SAMPLE_BLOCKS - 1) for i in range(SAMPLE_BLOCKS)]


def sampled_digest(path: Path, size: int) -> str:
    """sha256 of ``size`` and the sampled blocks of ``path`` (the whole file when small)."""
    digest = hashlib.sha256(str(size).encode())
    length = size if size <= SAMPLE_BLOCKS * SAMPLE_BLOCK else SAMPLE_BLOCK
    with path.open("rb") as handle:
        for offset in sample_offsets(size):
            handle.seek(offset)
            digest.update(handle.read(length))
    return digest.hexdigest()


def describe_file(path: Path) -> tuple[str, dict[str, Any]]:
    """What the manifest records about ``path`` when it is published: its sha256, and its size and sampled digest."""
    size = path.stat().st_size
    return file_sha256(path), {"size": size, "sample": sampled_digest(path, size)}


@dataclass(frozen=True)
class BadFile:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _entries(folder: Path, manifest: dict[str, Any]) -> Iterator[tuple[Path, str, dict[str, Any] | None]]:
    stats = manifest.get("file_stats", {})
    for name, sha in manifest.get("files", {}).items():
        yield folder / name, sha, stats.get(name)


def _size_problem(path: Path, stat: dict[str, Any] | None) -> str | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if stat is not None and size != stat["size"]:
        return f"{size} bytes, the manifest says {stat['size']} (truncated or replaced)"
    return None


def quick_check(folder: Path, manifest: dict[str, Any]) -> list[BadFile]:
    """The bad files of an artifact, in bounded time: sizes, small files in full, big files sampled (module doc).
    A manifest written before ``file_stats`` existed gets the full check."""
    entries = list(_entries(folder, manifest))
    bad = [BadFile(p, problem) for p, _, stat in entries if (problem := _size_problem(p, stat))]
    if bad:
        return bad
    budget = FULL_CHECK_BUDGET
    for path, sha, stat in sorted(entries, key=lambda e: e[2]["size"] if e[2] else -1):
        if stat is None or (stat["size"] <= BIG_FILE and stat["size"] <= budget):
            budget -= stat["size"] if stat else 0
            if file_sha256(path) != sha:
                bad.append(BadFile(path, "sha256 differs from the manifest (corrupt)"))
        elif sampled_digest(path, stat["size"]) != stat["sample"]:
            bad.append(BadFile(path, "sampled blocks differ from the manifest (corrupt or replaced)"))
    return bad


def full_check(
    folder: Path, manifest: dict[str, Any], hash_files: Callable[[list[Path]], Iterable[str]] | None = None
) -> list[BadFile]:
    """The bad files of an artifact: every file hashed in full (``bft verify``). ``hash_files`` maps paths to their
    sha256 each (a thread pool's map in ``bft verify``)."""
    entries = list(_entries(folder, manifest))
    bad = [BadFile(p, problem) for p, _, stat in entries if (problem := _size_problem(p, stat))]
    already_bad = {b.path for b in bad}
    present = [(p, sha) for p, sha, _ in entries if p not in already_bad]
    digests = (hash_files or (lambda paths: map(file_sha256, paths)))([p for p, _ in present])
    for (path, sha), actual in zip(present, digests, strict=True):
        if actual != sha:
            bad.append(BadFile(path, "sha256 differs from the manifest (corrupt)"))
    return bad
