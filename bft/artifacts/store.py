"""Content-addressed artifact store.

A stage's output lives in ``<root>/<stage>/<key>/`` where ``key`` hashes the stage's name, its declared code
``version``, its own config and the keys of its upstream artifacts. Work in progress lives in ``<key>.partial/`` (so
generation shards and training checkpoints survive a kill); on success ``manifest.json`` is written last into it and
the folder is renamed into place, so a complete folder always has its manifest. A failed write (a full disk) leaves
no temp file behind. A manifest lists every file with its sha256, size and sampled digest, computed once when the
artifact is published, and which bft made it (``bft.artifacts.provenance``). Reuse checks them in bounded time
(``bft.artifacts.integrity.quick_check``); ``bft verify`` hashes everything. A corrupt artifact found on reuse is
moved aside and recomputed. Two processes needing the same artifact compute it once: the second waits on a file
lock and reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from filelock import FileLock

from bft.artifacts.integrity import describe_file, quick_check
from bft.artifacts.provenance import code_provenance
from bft.errors import PipelineError, writing

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def stable_hash(payload: Any, length: int = 12) -> str:
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def package_versions() -> dict[str, str]:
    """The versions of Python and the packages that make results, for the manifest (a copy of :func:`_versions`)."""
    return dict(_versions())


@cache
def _versions() -> dict[str, str]:
    """Read once per process, like :func:`code_provenance`: a read parses every package's metadata (about 40 ms
    here), and every stage's manifest records them."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("bft", "torch", "transformers", "peft", "lightning", "alpaca-eval", "datasets", "vllm"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with writing(path), tmp.open("w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


JOB_FILE = "job.json"


class JsonJobFile:
    """A dataclass job that a separate process runs: saved as ``<folder>/job.json`` (its fields, atomically) and
    loaded back from that path. Subclasses are dataclasses with a ``folder`` property."""

    folder: Path

    def save(self) -> Path:
        from dataclasses import asdict

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / JOB_FILE
        write_json_atomic(path, asdict(self))
        return path

    @classmethod
    def load(cls, path: str | Path):
        return cls(**json.loads(Path(path).read_text()))


@contextmanager
def atomic_folder(dest: Path) -> Iterator[Path]:
    """Yield an empty temp folder beside ``dest`` to write into; on success it replaces ``dest``, on failure it is
    removed (an I/O error names ``dest``). ``dest`` is moved aside, not deleted, until the new folder is in place."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        with writing(dest):
            yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = dest.with_name(f".{dest.name}.old{os.getpid()}")
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    if old.exists():
        shutil.rmtree(old)


@dataclass
class Artifact:
    stage: str
    key: str
    path: Path
    manifest: dict[str, Any]
    reused: bool = False
    exports: dict[str, str] = field(default_factory=dict)  # logical output name -> file, set by its stage

    def file(self, name: str) -> Path:
        return self.path / name

    def export(self, name: str) -> Path:
        """The file this artifact hands downstream under a logical name (e.g. ``pairs``)."""
        return self.path / self.exports[name]


@dataclass
class StageOutput:
    """What a stage's compute function returns besides the files it wrote."""

    counts: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class CorruptArtifactError(RuntimeError):
    pass


def move_aside(path: Path) -> Path:
    """Rename a bad artifact folder to ``<key>.corrupt-<time>`` (kept for inspection; its key is free again)."""
    quarantine = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    path.rename(quarantine)
    return quarantine


def missing_writes(work: Path, writes: tuple[str, ...]) -> list[str]:
    """Declared outputs not in ``work``: ``name/`` must be a folder, anything else a file."""
    return [w for w in writes if not ((work / w).is_dir() if w.endswith("/") else (work / w).is_file())]


class ArtifactStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def key_for(self, stage: str, config: dict[str, Any], upstream: dict[str, str], version: int = 1) -> str:
        """The artifact key: the stage's name and code ``version`` (``Stage.version``), its config, its upstream keys."""
        payload = {"stage": stage, "version": version, "config": config, "upstream": dict(sorted(upstream.items()))}
        return stable_hash(payload)

    def path_for(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def load(self, stage: str, key: str) -> Artifact | None:
        """A complete artifact that passes the quick check (``bft.artifacts.integrity``), or None. A corrupt one is
        moved aside with a warning."""
        path = self.path_for(stage, key)
        manifest_path = path / MANIFEST
        if not manifest_path.exists():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("key", key) != key:
                raise CorruptArtifactError(f"its manifest is that of artifact {manifest['key']}")
            bad = quick_check(path, manifest)
            if bad:
                raise CorruptArtifactError("; ".join(map(str, bad[:3])) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""))
        except (json.JSONDecodeError, CorruptArtifactError, OSError) as err:
            quarantine = move_aside(path)
            log.warning("artifact %s/%s is corrupt (%s); moved to %s and recomputing", stage, key, err, quarantine)
            return None
        return Artifact(stage=stage, key=key, path=path, manifest=manifest, reused=True)

    def get_or_compute(
        self,
        stage: str,
        config: dict[str, Any],
        upstream: dict[str, Artifact],
        compute: Callable[[Path], StageOutput],
        writes: tuple[str, ...] = (),
        version: int = 1,
    ) -> Artifact:
        """Return the artifact for (stage, version, config, upstream), computing it under a lock if needed.

        ``compute(work_dir)`` writes its files into ``work_dir`` (a persistent ``.partial`` folder, so it can
        resume) and returns counts/metrics for the manifest. Every file in ``writes`` must exist before the
        artifact is published (``PipelineError`` otherwise; the partial folder is kept).
        """
        upstream_keys = {name: art.key for name, art in upstream.items()}
        key = self.key_for(stage, config, upstream_keys, version)
        existing = self.load(stage, key)
        if existing:
            return existing
        final = self.path_for(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            existing = self.load(stage, key)  # another process may have finished it while we waited
            if existing:
                return existing
            work = final.with_name(key + ".partial")
            work.mkdir(exist_ok=True)
            started = time.time()
            with writing(work):  # a full disk names the stage's folder; its completed shards stay for the re-run
                output = compute(work)
            missing = missing_writes(work, writes)
            if missing:
                raise PipelineError(f"{stage}: compute did not write its declared {', '.join(missing)} in {work}")
            described = {  # each file hashed once, here; reuse checks sizes and samples (bft.artifacts.integrity)
                str(p.relative_to(work)): describe_file(p)
                for p in sorted(work.rglob("*"))
                if p.is_file() and "checkpoints" not in p.relative_to(work).parts and p.name != MANIFEST
            }
            shutil.rmtree(work / "checkpoints", ignore_errors=True)
            manifest = {
                "stage": stage,
                "stage_version": version,
                "key": key,
                "config": config,
                "upstream": upstream_keys,
                "counts": output.counts,
                "metrics": output.metrics,
                "seconds": round(time.time() - started, 3),
                "versions": package_versions(),
                "code": code_provenance(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": {name: sha for name, (sha, _) in described.items()},
                "file_stats": {name: stats for name, (_, stats) in described.items()},
                **output.extra,
            }
            write_json_atomic(work / MANIFEST, manifest)  # written last, and the rename publishes folder + manifest at once
            if final.exists():  # a stale or quarantined folder without a manifest
                shutil.rmtree(final)
            work.rename(final)
            return Artifact(stage=stage, key=key, path=final, manifest=manifest, reused=False)
