"""The artifact store: keys, reuse, atomic completion, corruption detection, one computation under contention."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import time
from pathlib import Path

from bft.artifacts.shards import run_sharded, shard_path
from bft.artifacts.store import ArtifactStore, StageOutput


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


def test_key_depends_on_config_and_upstream(tmp_path):
    store = ArtifactStore(tmp_path)
    up = store.get_or_compute("up", {"x": 1}, {}, _write)
    k1 = store.key_for("down", {"a": 1}, {"up": up.key})
    assert k1 != store.key_for("down", {"a": 2}, {"up": up.key})
    assert k1 != store.key_for("down", {"a": 1}, {"up": "other"})
    assert k1 == store.key_for("down", {"a": 1}, {"up": up.key})


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
