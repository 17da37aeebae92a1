"""Reuse in bounded time: files are hashed once when published; reuse checks sizes, small files in full and sampled
blocks of big ones (never reading a big file whole); ``bft verify`` hashes every byte and finds what reuse cannot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bft.artifacts import integrity
from bft.artifacts.store import ArtifactStore, StageOutput
from bft.artifacts.verify import main as verify_main

BIG = 4 * 1024 * 1024  # a "big" file here: the tests lower BIG_FILE to 1 MiB


@pytest.fixture(autouse=True)
def _one_mib_is_big(monkeypatch):
    monkeypatch.setattr(integrity, "BIG_FILE", 1024 * 1024)


def _model(work: Path, fill: bytes | None = None) -> StageOutput:
    (work / "model").mkdir(exist_ok=True)
    (work / "model" / "weights.bin").write_bytes(fill or os.urandom(BIG))
    (work / "model" / "config.json").write_text('{"layers": 2}')
    return StageOutput(counts={"out": 1})


@pytest.fixture
def full_hashes(monkeypatch) -> list[str]:
    """The files hashed in full, by name."""
    seen: list[str] = []
    real = integrity.file_sha256

    def spy(path: Path) -> str:
        seen.append(path.name)
        return real(path)

    monkeypatch.setattr(integrity, "file_sha256", spy)
    return seen


def _between_samples(size: int) -> int:
    """An offset that no sampled block covers."""
    offsets = integrity.sample_offsets(size)
    offset = offsets[7] + integrity.SAMPLE_BLOCK + 1000
    assert all(not (o <= offset < o + integrity.SAMPLE_BLOCK) for o in offsets)
    return offset


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_files_are_hashed_once_when_published_and_reuse_reads_only_samples_of_big_files(tmp_path, full_hashes):
    store = ArtifactStore(tmp_path)
    art = store.get_or_compute("model", {}, {}, _model)
    assert sorted(full_hashes) == ["config.json", "weights.bin"]  # publishing: every file, once
    manifest = json.loads((art.path / "manifest.json").read_text())
    assert manifest["file_stats"]["model/weights.bin"]["size"] == BIG and len(manifest["files"]["model/weights.bin"]) == 64
    full_hashes.clear()
    again = store.get_or_compute("model", {}, {}, lambda w: pytest.fail("recomputed"))
    assert again.reused and full_hashes == ["config.json"]  # the small file in full, the big one sampled
    assert len(integrity.sample_offsets(BIG)) * integrity.SAMPLE_BLOCK <= 1024 * 1024


def test_small_files_are_hashed_in_full_within_a_budget_smallest_first(tmp_path, full_hashes, monkeypatch):
    def shards(work: Path) -> StageOutput:
        for i, size in enumerate([300, 100, 200, 400]):
            (work / f"shard-{i}.jsonl").write_bytes(os.urandom(size))
        return StageOutput()

    store = ArtifactStore(tmp_path)
    store.get_or_compute("gen", {}, {}, shards)
    monkeypatch.setattr(integrity, "FULL_CHECK_BUDGET", 650)
    full_hashes.clear()
    assert store.get_or_compute("gen", {}, {}, shards).reused
    assert full_hashes == ["shard-1.jsonl", "shard-2.jsonl", "shard-0.jsonl"]  # 100 + 200 + 300; 400 is sampled


@pytest.mark.parametrize("damage", ["truncate", "overwrite a sampled block", "delete"])
def test_a_damaged_big_file_is_found_on_reuse_moved_aside_and_recomputed(tmp_path, damage, caplog):
    store = ArtifactStore(tmp_path)
    art = store.get_or_compute("model", {}, {}, _model)
    weights = art.file("model/weights.bin")
    if damage == "truncate":
        os.truncate(weights, BIG - 1)
    elif damage == "delete":
        weights.unlink()
    else:
        with weights.open("r+b") as handle:
            handle.seek(integrity.sample_offsets(BIG)[-1])
            handle.write(b"\0" * 100)
    again = store.get_or_compute("model", {}, {}, lambda w: _model(w, b"x" * BIG))
    assert not again.reused and again.file("model/weights.bin").read_bytes() == b"x" * BIG
    assert "weights.bin" in caplog.text and "corrupt" in caplog.text
    assert len(list((tmp_path / "model").glob("*.corrupt-*"))) == 1


def test_a_manifest_without_file_stats_gets_the_full_check(tmp_path, full_hashes):
    """Artifacts published before sizes and samples were recorded are still checked, in full."""
    store = ArtifactStore(tmp_path)
    art = store.get_or_compute("model", {}, {}, _model)
    manifest = json.loads((art.path / "manifest.json").read_text())
    del manifest["file_stats"]
    (art.path / "manifest.json").write_text(json.dumps(manifest))
    full_hashes.clear()
    assert store.get_or_compute("model", {}, {}, _model).reused and sorted(full_hashes) == ["config.json", "weights.bin"]
    _flip(art.file("model/weights.bin"), _between_samples(BIG))
    assert store.load("model", art.key) is None


def test_bft_verify_finds_a_flipped_byte_that_reuse_does_not_read(tmp_path, capsys):
    store = ArtifactStore(tmp_path / "store")
    art = store.get_or_compute("model", {}, {}, _model)
    store.get_or_compute("other", {}, {}, lambda w: (w / "x.txt").write_text("x") and StageOutput())
    with pytest.raises(SystemExit) as exited:
        verify_main([str(tmp_path / "store")])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("verified 2 artifact(s), 3 files")

    weights = art.file("model/weights.bin")
    _flip(weights, _between_samples(BIG))
    assert store.load("model", art.key) is not None  # between the sampled blocks: reuse cannot see it
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    bad = subprocess.run([sys.executable, "-m", "bft.cli", "verify", str(tmp_path / "store")], capture_output=True, text=True, env=env)
    assert bad.returncode == 1
    lines = bad.stdout.strip().splitlines()
    assert lines[:-1] == [f"{weights}: sha256 differs from the manifest (corrupt)"]
    assert lines[-1].endswith(": 1 bad file(s) in 1 artifact(s)")

    with pytest.raises(SystemExit) as exited:  # an artifact folder works too; --move-aside frees its key
        verify_main([str(art.path), "--move-aside"])
    assert exited.value.code == 1 and "moved " in capsys.readouterr().out and not art.path.exists()
    assert not store.get_or_compute("model", {}, {}, _model).reused


def test_bft_verify_with_nothing_to_verify_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        verify_main([str(tmp_path)])
    assert exited.value.code == 2 and "no artifact" in capsys.readouterr().err


def test_the_reuse_benchmark_runs_at_a_small_size(tmp_path, capsys):
    from bft.bench.reuse import main as bench_main

    bench_main(["--size-gb", "0.004", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "verify (every byte)" in out and " found\n" in out and "found, moved aside" in out and "reused=True" in out
    assert not list(tmp_path.iterdir())  # the temp store is removed


def test_an_artifact_under_another_key_is_not_reused(tmp_path):
    """A folder copied or renamed to another key carries its manifest's key: it is moved aside, not reused."""
    store = ArtifactStore(tmp_path)
    art = store.get_or_compute("model", {"a": 1}, {}, _model)
    other = store.key_for("model", {"a": 2}, {})
    art.path.rename(store.path_for("model", other))
    assert store.load("model", other) is None and list((tmp_path / "model").glob(f"{other}.corrupt-*"))
