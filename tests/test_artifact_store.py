"""The artifact store: keys, reuse, atomic completion, corruption detection, one computation under contention."""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from bft.artifacts.shards import run_sharded, shard_path
from bft.artifacts.store import ArtifactStore, StageOutput
from bft.errors import as_os_error, describe, writing


def _write(work: Path, text: str = "hello") -> StageOutput:
    (work / "out.txt").write_text(text)
    return StageOutput(counts={"out": 1})


def test_compute_then_reuse_with_manifest(tmp_path):
    store = ArtifactStore(tmp_path)
    calls = []
    art = store.get_or_compute("stage", {"a": 1}, {}, lambda w: calls.append(1) or _write(w))
    assert not art.reused and art.file("out.txt").read_text() == "hello"
    manifest = json.loads((art.path / "manifest.json").read_text())
    assert manifest["counts"] == {"out": 1} and "out.txt" in manifest["files"] and "torch" in manifest["versions"]
    again = store.get_or_compute("stage", {"a": 1}, {}, lambda w: calls.append(1) or _write(w))
    assert again.reused and again.key == art.key and len(calls) == 1


def test_a_declared_file_that_was_not_written_stops_publishing(tmp_path):
    from bft.errors import PipelineError

    store = ArtifactStore(tmp_path)
    with pytest.raises(PipelineError, match=r"stage: compute did not write its declared missing\.jsonl, model/"):
        store.get_or_compute("stage", {"a": 1}, {}, _write, writes=("out.txt", "missing.jsonl", "model/"))
    assert not list((tmp_path / "stage").glob("*/manifest.json"))

    def with_model(work: Path) -> StageOutput:
        (work / "model").mkdir()
        (work / "model" / "weights.bin").write_bytes(b"w")
        (work / "missing.jsonl").write_text("{}\n")
        return _write(work)

    art = store.get_or_compute("stage", {"a": 1}, {}, with_model, writes=("out.txt", "missing.jsonl", "model/"))
    assert not art.reused and art.file("model/weights.bin").exists()


def test_key_depends_on_config_and_upstream(tmp_path):
    store = ArtifactStore(tmp_path)
    up = store.get_or_compute("up", {"x": 1}, {}, _write)
    k1 = store.key_for("down", {"a": 1}, {"up": up.key})
    assert k1 != store.key_for("down", {"a": 2}, {"up": up.key})
    assert k1 != store.key_for("down", {"a": 1}, {"up": "other"})
    assert k1 == store.key_for("down", {"a": 1}, {"up": up.key})
    assert (
        k1 == store.key_for("down", {"a": 1}, {"up": up.key}, version=1) != store.key_for("down", {"a": 1}, {"up": up.key}, version=2)
    )


def test_half_written_artifact_is_not_complete_and_failure_keeps_partial(tmp_path):
    store = ArtifactStore(tmp_path)

    def crash(work: Path) -> StageOutput:
        (work / "partial.txt").write_text("half")
        raise RuntimeError("killed")

    with contextlib.suppress(RuntimeError):
        store.get_or_compute("stage", {}, {}, crash)
    key = store.key_for("stage", {}, {})
    assert store.load("stage", key) is None
    assert (tmp_path / "stage" / f"{key}.partial" / "partial.txt").exists()  # resumable work survives
    art = store.get_or_compute("stage", {}, {}, _write)
    assert art.file("partial.txt").exists() and art.file("out.txt").exists()


def test_corrupt_artifact_is_detected_and_recomputed(tmp_path, caplog):
    store = ArtifactStore(tmp_path)
    art = store.get_or_compute("stage", {}, {}, _write)
    art.file("out.txt").write_text("tampered")
    again = store.get_or_compute("stage", {}, {}, lambda w: _write(w, "fresh"))
    assert not again.reused and again.file("out.txt").read_text() == "fresh"
    assert any("corrupt" in r.message for r in caplog.records)
    assert list((tmp_path / "stage").glob("*.corrupt-*"))


def _slow_compute(root: str, marker: str) -> None:
    store = ArtifactStore(root)

    def compute(work: Path) -> StageOutput:
        with open(marker, "a") as handle:
            handle.write("x")
        time.sleep(1.0)
        return _write(work)

    store.get_or_compute("shared", {"k": 1}, {}, compute)


@pytest.mark.slow  # starts two processes
def test_two_processes_compute_a_shared_stage_once(tmp_path):
    marker = tmp_path / "calls.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_slow_compute, args=(str(tmp_path / "store"), str(marker))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert marker.read_text() == "x"


def test_sharded_processing_resumes_only_missing_shards(tmp_path):
    records = [{"i": i} for i in range(10)]
    seen: list[int] = []

    def process(shard, index):
        seen.append(index)
        return [{"i": r["i"], "sq": r["i"] ** 2} for r in shard]

    out, reused = run_sharded(records, tmp_path, 3, process)
    assert [r["sq"] for r in out] == [i * i for i in range(10)] and reused == 0 and seen == [0, 1, 2, 3]
    shard_path(tmp_path, 2).unlink()
    seen.clear()
    out2, reused2 = run_sharded(records, tmp_path, 3, process)
    assert out2 == out and seen == [2] and reused2 == 3


def _fail_fsync_on(call: int):
    """An ``os.fsync`` that reports a full disk on its ``call``-th use (where a real ENOSPC often surfaces)."""
    calls = [0]
    real = os.fsync

    def fsync(fd: int) -> None:
        calls[0] += 1
        if calls[0] == call:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    return fsync


def test_disk_full_while_sharding_keeps_finished_shards_and_names_the_file(tmp_path, monkeypatch):
    records = [{"i": i} for i in range(9)]
    monkeypatch.setattr(os, "fsync", _fail_fsync_on(3))  # shards 0 and 1 are written, shard 2 hits the full disk
    with pytest.raises(OSError) as caught:
        run_sharded(records, tmp_path, 3, lambda shard, i: shard)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(shard_path(tmp_path, 2))
    line = describe(caught.value)
    assert line.startswith("disk full (No space left on device) while writing ") and "\n" not in line
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["shard-00000.jsonl", "shard-00001.jsonl"]
    monkeypatch.undo()
    seen: list[int] = []
    out, reused = run_sharded(records, tmp_path, 3, lambda shard, i: seen.append(i) or shard)
    assert out == records and reused == 2 and seen == [2]


def test_disk_full_while_publishing_leaves_no_complete_looking_artifact(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    monkeypatch.setattr(os, "fsync", _fail_fsync_on(1))  # the manifest write is the stage's only fsync
    with pytest.raises(OSError, match="No space left"):
        store.get_or_compute("stage", {"a": 1}, {}, _write)
    assert not list(tmp_path.rglob("manifest.json")) and not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert store.load("stage", store.key_for("stage", {"a": 1}, {})) is None
    monkeypatch.undo()
    art = store.get_or_compute("stage", {"a": 1}, {}, _write)
    assert not art.reused and art.file("out.txt").read_text() == "hello"


def test_rust_io_errors_become_os_errors_naming_the_path(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(OSError) as caught, writing(tmp_path / "model"):
        raise Exception("Error while serializing: I/O error: File too large (os error 27)")  # noqa: TRY002 - safetensors' type
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(tmp_path / "model")
    assert as_os_error(ValueError("not an I/O problem")) is None
    with pytest.raises(Exception) as real:  # the genuine article: a folder where the file should go
        (tmp_path / "x.safetensors").mkdir()
        save_file({}, str(tmp_path / "x.safetensors"))
    assert as_os_error(real.value) is not None
