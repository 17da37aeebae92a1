"""What each corpus filter removed: ``bft-analyze corpus`` and the run summary's compact line, from a real corpus run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bft.analysis.cli import main as analyze_main
from bft.analysis.corpus_filters import load_report, removals, removals_text
from bft.config.schema import CorpusConfig
from bft.data.corpus import build_corpus
from bft.pipeline.summary import _decontaminated, _decontaminated_text

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)


@pytest.fixture(scope="module")
def corpus_artifact(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    build_corpus(CorpusConfig(), "raise", folder / "corpus.jsonl")
    return folder


def test_summary_line_counts_every_filter(corpus_artifact: Path) -> None:
    summary = removals(load_report(corpus_artifact))
    assert summary["in"] == 80 and summary["kept"] == 76
    assert summary["removed"]["near_duplicate"] == 3 and list(summary["removed"]) == ["clean", "language", "length", "near_duplicate"]
    assert summary["file"] == str(corpus_artifact / "filters.json")
    line = removals_text(summary)
    assert line.startswith("corpus filters: 80 in, 76 kept; removed clean ")
    assert "near_duplicate 3" in line


def test_bft_analyze_corpus_prints_the_table_with_examples(corpus_artifact: Path, tmp_path: Path, capsys) -> None:
    report = json.loads((corpus_artifact / "filters.json").read_text())
    dup = next(f for f in report["filters"] if f["filter"] == "near_duplicate")
    assert analyze_main(["corpus", str(corpus_artifact), "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert "near_duplicate" in out and "symbol_ratio" in out
    first = dup["examples"][0]
    assert f"[{first['reason']}] {first['id']}: " in out and dup["examples"][1]["id"] not in out  # one example per filter
    # a run folder: its summary.json names the report
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"corpus_filters": removals(load_report(corpus_artifact))}))
    assert analyze_main(["corpus", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["filters"] == report["filters"]


def test_bft_analyze_corpus_refuses_a_folder_without_a_report(tmp_path: Path, capsys) -> None:
    assert analyze_main(["corpus", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bft-analyze corpus: ") and "filters.json" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "filters.json").write_text(json.dumps({"filters": 3}))
    assert analyze_main(["corpus", str(tmp_path)]) == 2
    assert "key 'filters'" in capsys.readouterr().err


def test_summary_shows_seed_and_generated_decontamination() -> None:
    counts = {
        "decontaminated_seed": {"exact": 1, "ngram": 0, "embedding": 0},
        "decontaminated_generated": {"exact": 0, "ngram": 2, "embedding": 1},
    }
    text = _decontaminated_text(_decontaminated(counts))
    assert text == "decontaminated against the eval set: seed 1 (exact 1); generated 3 (ngram 2, embedding 1)"
    assert _decontaminated_text(_decontaminated({})) == ""  # an artifact from before the seed check
