"""A scoring's ``reproduce.sh`` (alpaca_eval's own CLI with bft's judges registered) gives the scoring's win rate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_eval import _pairs

from bft.eval.alpaca_eval_cli import cli_arguments
from bft.eval.score import score_outputs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def length_judge(monkeypatch) -> str:
    """``annotator=local`` judged by tests/helpers/length_judge.py instead of a model; returns the judge_model to pass."""
    from helpers.length_judge import JUDGE_MODEL, length_judge_completions

    from bft.eval import judges

    monkeypatch.setattr(judges, "hf_logprob_completions", length_judge_completions)
    return JUDGE_MODEL


def _env() -> dict[str, str]:
    # tests/ too: the saved config names the test double (helpers.length_judge) as its judge
    path = f"{REPO}{os.pathsep}{REPO / 'tests'}"
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHON": sys.executable}


def _cli_win_rate(out: Path) -> float:
    return float(pd.read_csv(out / "leaderboard.csv", index_col=0)["win_rate"].iloc[0])


def test_saved_config_names_the_judge_and_cached_integral_preferences_stay_float(tmp_path, length_judge):
    model, reference = _pairs()
    out_dir = tmp_path / "eval"
    first = score_outputs(model, reference, "local", out_dir, judge_model=length_judge)
    (config,) = (out_dir / "annotator_configs").glob("*/configs.yaml")
    (entry, settings), *_ = yaml.safe_load(config.read_text()).items()
    assert settings["fn_completions"] == "helpers.length_judge.length_judge_completions"
    assert settings["completions_kwargs"]["model_name"] == length_judge
    cached = json.loads((out_dir / "annotations_cache.json").read_text())
    assert {a["preference"] for a in cached} == {1.0, 2.0}  # all integral: pandas 3 reads them back as int64
    # an identical pair is marked 1.5 on top of the cached int64 column: alpaca_eval 0.6.6 fails there unpatched
    model[3]["output"] = reference[3]["output"]
    again = score_outputs(model, reference, "local", out_dir, judge_model=length_judge)
    assert first["n_draws"] == 0 and again["n_draws"] == 1 and again["win_rate"] == pytest.approx(62.5)  # 2 wins, 1 loss, 1 draw


@pytest.mark.slow
def test_reproduce_script_gives_the_scorings_win_rate(tmp_path, length_judge):
    model, reference = _pairs()
    out_dir = tmp_path / "eval"
    result = score_outputs(model, reference, "local", out_dir, judge_model=length_judge, judge_orders=2)
    before = (out_dir / "annotations_cache.json").read_bytes()
    out = tmp_path / "cli"
    proc = subprocess.run(
        ["bash", str(out_dir / result["reproduce_script"]), str(out)], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _cli_win_rate(out) == pytest.approx(result["win_rate"], abs=0.01)
    assert f"{result['win_rate']:.2f}" in proc.stdout  # alpaca_eval prints its leaderboard
    assert "Annotating 0 examples" in proc.stderr  # the run's judgements, read from the cache
    assert (out_dir / "annotations_cache.json").read_bytes() == before  # the run's files are only read


@pytest.mark.slow
def test_saved_local_judge_config_alone_rejudges_both_orders_to_the_same_win_rate(tmp_path):
    """Without the cache, alpaca_eval's CLI runs bft's local judge from the saved config (orders=2 and all)."""
    model, reference = _pairs()
    out_dir = tmp_path / "eval"
    model = model[:2]
    result = score_outputs(model, reference, "local", out_dir, judge_model="tiny", judge_dtype="float32", judge_orders=2)
    (config,) = (out_dir / "annotator_configs").glob("*/configs.yaml")
    assert yaml.safe_load(config.read_text())[config.parent.name]["completions_kwargs"]["orders"] == 2
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    args = cli_arguments(out_dir, config, result["model"], 0, str(fresh), str(fresh / "annotations_cache.json"))
    proc = subprocess.run(
        [sys.executable, "-m", "bft.eval.alpaca_eval_cli", *args], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Annotating {len(model)} examples" in proc.stderr
    assert _cli_win_rate(fresh) == pytest.approx(result["win_rate"], abs=0.01)


def test_bft_eval_prints_the_reproducing_command(tmp_path, capsys, length_judge):
    from bft.eval.cli import main

    model, reference = _pairs()
    outputs = tmp_path / "model_outputs.json"
    outputs.write_text(json.dumps(model))
    reference_file = tmp_path / "reference.json"
    reference_file.write_text(json.dumps(reference))
    assert main([f"outputs={outputs}", f"eval={reference_file}", "annotator=local", f"judge_model={length_judge}"]) == 0
    script = tmp_path / "eval" / "reproduce.sh"
    assert f"reproduce with alpaca_eval's CLI: bash {script}" in capsys.readouterr().out and script.is_file()
