"""``python -m bft.workers.memcheck``: the real augment stage on a replicated corpus, one process per factor."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow  # a subprocess loading the tiny model
def test_memcheck_runs_the_augment_stage_on_the_raw_file_replicated(tmp_path: Path):
    """``--raw``: the file as it is, replicated (factor 2 here; the factors side by side are the test below)."""
    corpus = tmp_path / "corpus.jsonl"
    texts = [f"Document {i}. " + "Plain words about gardens and tools. " * 20 for i in range(3)]
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    lines = [line for line in _memcheck(corpus, "--raw", times=("2",)) if re.match(r"^\d+x: ", line)]
    assert [line.split(" records")[0] for line in lines] == ["2x: 6"]
    assert all(float(re.search(r"peak RSS ([\d.]+) MB", line).group(1)) > 0 for line in lines)


def _memcheck(corpus: Path, *args: str, times: tuple[str, ...] = ("1", "2")) -> list[str]:
    cmd = [sys.executable, "-m", "bft.workers.memcheck", str(corpus), "--times", *times, "--override=model.name=tiny"]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


@pytest.mark.slow  # the corpus stage, then two subprocesses loading the tiny model
def test_memcheck_augments_the_corpus_stages_segments(tmp_path: Path):
    from bft.data.embedded import embedded_file

    corpus = tmp_path / "corpus.jsonl"  # the first 8 embedded documents: real web text, an eighth of the work
    corpus.write_text("".join(Path(str(embedded_file("corpus.jsonl"))).read_text().splitlines(keepends=True)[:8]))
    lines = _memcheck(corpus)
    cleaned = re.match(r"corpus stage: (\d+) documents -> (\d+) segments", lines[0])
    assert cleaned and int(cleaned.group(1)) == sum(1 for _ in corpus.open())
    segments = int(cleaned.group(2))
    assert segments > 0
    factors = [line for line in lines if re.match(r"^\d+x: ", line)]
    assert [line.split(" records")[0] for line in factors] == [f"1x: {segments}", f"2x: {2 * segments}"]
    assert lines[-1].startswith("peak RSS ratio 2x / 1x: ")


@pytest.mark.slow  # starts a process
def test_memcheck_names_a_failing_factor_in_one_line(tmp_path: Path):
    cmd = [sys.executable, "-m", "bft.workers.memcheck", str(tmp_path / "missing.jsonl"), "--times", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("corpus stage: failed: ")
    done = subprocess.run([*cmd, "--raw"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("1x: failed: ")
