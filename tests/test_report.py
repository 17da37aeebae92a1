"""bft.report: loader, run -> paper-row mapping, tables, Markdown / CSV output and the results notebook (offline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bft.report.aggregate import MISSING, estimate
from bft.report.load import find_summaries, load_runs
from bft.report.mapping import corpus_row, paper_row_label, recipe, scale_of, tables_for
from bft.report.tables import corpus_table, curation_table, data_scale_table, fit_intercept, paper_table, seed_size_table

# --- fake-but-well-formed run folders (test fixtures, not results) ----------------------------------------------

FIXTURE_RUNS: list[dict[str, Any]] = [
    {
        "folder": "outputs/fixture_bft_seed16_a/2025-01-01_00-00-00",
        "name": "fixture_bft_seed16_a",
        "method": "backandforth",
        "seed_size": 16,
        "win_rate": 40.0,
        "standard_error": 9.0,
        "n_generated": 12,
        "iterations": 1,
    },
    {
        "folder": "outputs/fixture_bft_seed16_b/2025-01-02_00-00-00",
        "name": "fixture_bft_seed16_b",
        "method": "backandforth",
        "seed_size": 16,
        "win_rate": 44.0,
        "standard_error": 10.0,
        "n_generated": 14,
        "iterations": 2,
    },
    {
        "folder": "multirun/2025-01-03/0_seed.size=8",
        "name": "fixture_bft_seed8",
        "method": "backandforth",
        "seed_size": 8,
        "win_rate": 30.0,
        "standard_error": 8.5,
        "n_generated": 6,
        "iterations": 1,
    },
    {
        "folder": "outputs/fixture_baseline_alpaca/2025-01-04_00-00-00",
        "name": "fixture_baseline_alpaca",
        "method": "baseline_dataset",
        "baseline_file": "alpaca_gpt4.jsonl",
        "seed_size": 16,
        "win_rate": 35.5,
        "standard_error": 9.5,
        "n_generated": 16,
        "iterations": 0,
    },
]


def _fixture_summary(spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    curated = run_dir / "generated.jsonl"
    curated.write_text(
        "".join(
            json.dumps({"instruction": "Explain item " + "x " * (i % 5), "output": "word " * (10 + 7 * i)}) + "\n"
            for i in range(spec["n_generated"])
        )
    )
    rewriting = spec["method"] != "baseline_dataset"
    curation = {
        f"curate_{i}": {
            "kept": spec["n_generated"],
            "kept_fraction": 0.25 + 0.25 * i,
            "parse_failure_rate": 0.1 / (i + 1),
            "score_histogram": {"1": 2, "2": 3, "3": 5, "4": 6 + i, "5": 4 + i},
            "labels": None,
        }
        for i in range(spec["iterations"])
    }
    return {
        "run": {
            "name": spec["name"],
            "method": spec["method"],
            "model": "smollm2_135m",
            "seed_source": "embedded",
            "seed_size": spec["seed_size"],
            "corpus": "embedded",
            "rewriter": "smollm2_135m" if rewriting else "none",
            "rewriter_mode": "rewrite",
            "curation_enabled": rewriting,
            "curation_iterations": spec["iterations"],
            "curation_scoring": "generate",
            "curation_threshold": 5.0,
            "max_generated": None,
            "baseline_file": spec.get("baseline_file"),
            "eval_set": "embedded",
            "tags": [spec["method"], "local"],
            "group": "fixture",
            "run_dir": str(run_dir),
        },
        "win_rate": spec["win_rate"],
        "standard_error": spec["standard_error"],
        "length_controlled_winrate": None,
        "discrete_win_rate": spec["win_rate"],
        "n": 24,
        "n_generated": spec["n_generated"],
        "annotator": "local",
        "reference": "base",
        "curated_dataset": str(curated),
        "train_dataset": str(run_dir / "train.jsonl"),
        "final_model": str(run_dir / "model"),
        "leaderboard": str(run_dir / "leaderboard.json"),
        "wandb_dir": None,
        "stages": {"seed": {"reused": False, "in": 16, "out": 16, "seconds": 0.1, "key": "fixture"}},
        "curation": curation,
    }


@pytest.fixture
def fixture_runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for spec in FIXTURE_RUNS:
        run_dir = root / spec["folder"]
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text(json.dumps(_fixture_summary(spec, run_dir)))
    return root


@pytest.fixture
def runs(fixture_runs_root: Path) -> pd.DataFrame:
    return load_runs([fixture_runs_root / "outputs", fixture_runs_root / "multirun"])


# --- loader --------------------------------------------------------------------------------------------------


def test_loader_one_row_per_run_with_flat_run_fields(fixture_runs_root: Path, runs: pd.DataFrame):
    assert len(find_summaries([fixture_runs_root])) == 4
    assert len(runs) == 4
    assert set(runs["name"]) == {s["name"] for s in FIXTURE_RUNS}
    row = runs.set_index("name").loc["fixture_bft_seed16_a"]
    assert row["method"] == "backandforth" and row["seed_size"] == 16 and row["tags"] == ["backandforth", "local"]
    assert row["win_rate"] == 40.0 and row["curation"]["curate_0"]["kept"] == 12
    assert Path(row["summary_path"]).name == "summary.json"


def test_loader_missing_folder_gives_empty_frame_with_columns(tmp_path: Path):
    empty = load_runs([tmp_path / "nothing"])
    assert empty.empty and {"method", "win_rate", "seed_size"} <= set(empty.columns)


def test_loader_skips_unreadable_summary(tmp_path: Path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{not json")
    df = load_runs([tmp_path])
    assert df.empty and len(df.attrs["skipped"]) == 1


# --- mapping -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "baseline_file", "expected"),
    [
        ("filter_only", None, "filtering"),
        ("rewrite_only", None, "rewriting"),
        ("backandforth", None, "filtering + rewriting"),
        ("distill", None, "filtering + distilling"),
        ("humpback", None, "ClueWeb + filtering"),
        ("baseline_dataset", "data/OpenOrca-GPT4.jsonl", "Open Orca"),
        ("baseline_dataset", "sharegpt_clean.jsonl", "ShareGPT"),
        ("baseline_dataset", "evol_instruct_70k.jsonl", "Evol-Instruct"),
        ("baseline_dataset", "alpaca_gpt4.jsonl", "Alpaca-GPT4"),
        ("baseline_dataset", "self-instruct.jsonl", "Self-instruct"),
        ("baseline_dataset", "dolly.jsonl", None),
        ("baseline_dataset", None, None),
        ("something_else", None, None),
    ],
)
def test_recipe(method: str, baseline_file: str | None, expected: str | None):
    assert recipe(method, baseline_file) == expected


def test_paper_row_labels_per_table():
    assert paper_row_label("table1", "backandforth") == "Dolma + filtering + rewriting"
    assert paper_row_label("table1", "humpback") == "ClueWeb + filtering (Humpback data)"
    assert paper_row_label("table1", "baseline_dataset", "open_orca.jsonl") == "Open Orca"
    assert paper_row_label("table2", "backandforth", max_generated=51200) == "Dolma + filtering + rewriting 51.2K"
    assert paper_row_label("table2", "backandforth", max_generated=25600) == "Dolma + filtering + rewriting 25.6K"
    assert paper_row_label("table2", "distill", max_generated=25600) == "Dolma + filtering + distilling 25.6K"
    assert paper_row_label("table10", "backandforth", max_generated=25600) == "filtering + rewriting 25.6K"
    assert paper_row_label("table10", "rewrite_only") == "Dolma + rewriting"
    assert tables_for(["backandforth", "paper", "table2"], "llama2_70b", "alpaca_eval_gpt4") == ("table2",)
    assert tables_for(["local"], "smollm2_135m", "local") == ("table1",)
    assert tables_for([], "llama2_70b", "alpaca_eval_gpt4") == ("table2",)
    assert tables_for([], "llama2_70b", "weighted_alpaca_eval_gpt4_turbo") == ("table10",)
    assert scale_of(["x", "paper"]) == "paper" and scale_of(["local"]) == "local" and scale_of(None) == "?"
    assert scale_of([], "smollm2_135m") == "local" and scale_of([], "meta-llama/Llama-2-7b-hf") == "?"
    assert corpus_row("allenai/c4") == "C4" and corpus_row("allenai/dolma") == "Dolma head" and corpus_row("embedded") is None


# --- tables --------------------------------------------------------------------------------------------------


def test_estimate_mean_and_se():
    e = estimate([40.0, 44.0], [9.0, 10.0])
    assert e.mean == pytest.approx(42.0) and e.se == pytest.approx(2.0) and e.n == 2
    assert estimate([30.0], [8.5]).se == 8.5
    assert estimate([None, float("nan")]).n == 0


def test_seed_size_table_sorted_with_means_and_se(runs: pd.DataFrame):
    table = seed_size_table(runs).frame
    bft_rows = table[table["method"] == "backandforth"]
    assert bft_rows["seed size"].tolist() == ["8", "16"]
    assert bft_rows["this project"].tolist() == ["30.00", "42.00"]
    assert bft_rows["SE"].tolist() == ["8.50", "2.00"]  # single run: its own SE; two runs: SE across runs
    assert bft_rows["runs"].tolist() == ["1", "2"]
    assert (table["paper"] == MISSING).all()


def test_table1_missing_rows_show_dash(runs: pd.DataFrame):
    table = paper_table(runs, "table1").frame.set_index("data")
    assert table.loc["Open Orca", "paper"] == "74.20"
    assert table.loc["Open Orca", "this project"] == MISSING and table.loc["Open Orca", "runs"] == "0"
    # local runs (embedded set, local judge vs the base model) never sit beside the paper's figures
    assert table.loc["Alpaca-GPT4", "this project"] == MISSING
    assert set(table.loc[["Dolma + filtering + rewriting"], "this project"]) == {MISSING}


def _paper_scale(runs: pd.DataFrame, **changes: Any) -> pd.DataFrame:
    """The fixture runs as if run at paper scale on AlpacaEval 1.0 with the GPT-4 judge (then ``changes``)."""
    paper = runs.copy()
    paper["eval_set"], paper["annotator"], paper["reference"], paper["model"] = "ae1", "alpaca_eval_gpt4", "dataset", "llama2_7b"
    paper["tags"] = [[*t, "paper"] for t in paper["tags"]]
    for key, value in changes.items():
        paper[key] = value
    return paper


def test_paper_rows_beside_matching_runs_only(runs: pd.DataFrame):
    from bft.report.tables import not_comparable_table

    table = paper_table(_paper_scale(runs), "table1").frame.set_index("data")
    assert table.loc["Alpaca-GPT4", "this project"] == "35.50"
    ours = table.loc[["Dolma + filtering + rewriting"]]
    assert set(ours["paper"]) == {"74.38"} and len(ours) == 2  # seed 8 and seed 16 are different settings
    assert "42.00" in set(ours["this project"])
    assert not_comparable_table(_paper_scale(runs)).frame.empty
    for change, reason in (
        ({"annotator": "local"}, "judge local"),
        ({"reference": "base"}, "reference base"),
        ({"eval_set": "embedded"}, "eval set embedded"),
        ({"tags": [["local"]] * 4}, "not a paper-scale setting"),
        ({"model": "llama2_13b"}, "model llama2_13b"),
    ):
        other = _paper_scale(runs, **change)
        assert set(paper_table(other, "table1").frame["this project"]) == {MISSING}
        shown = not_comparable_table(other).frame
        assert len(shown) == 4 and shown["not beside the paper because"].str.contains(reason).all(), change
    big = paper_table(_paper_scale(runs, model="llama2_70b"), "table2").frame.set_index("data")
    assert big.loc["Alpaca-GPT4", "this project"] == "35.50"  # a 70B run goes beside Table 2, not Table 1
    local = not_comparable_table(runs).frame.set_index("recipe")
    assert local.loc["Alpaca-GPT4", "win rate"] == "35.50"
    assert "judge local" in local.loc["Alpaca-GPT4", "not beside the paper because"]


def test_tables_without_runs_keep_paper_figures(runs: pd.DataFrame):
    for table in ("table2", "table10"):
        frame = paper_table(runs, table).frame
        assert len(frame) > 0 and (frame["runs"] == "0").all()
    t10 = paper_table(runs, "table10").frame.set_index("data")
    assert t10.loc["Dolma + filtering", "paper LC"] == "16.71" and t10.loc["Dolma + filtering", "this project LC"] == MISSING
    corpus = corpus_table(runs).frame.set_index("corpus")
    assert corpus.loc["C4", "paper"] == "66.83" and corpus.loc["C4", "this project"] == MISSING
    assert "embedded" in corpus.index


def test_data_scale_and_curation_tables(runs: pd.DataFrame):
    assert fit_intercept([(100.0, 6.95 * 4.605170185988092 + 3.0)]) == pytest.approx(3.0)
    scale = data_scale_table(runs).frame
    assert len(scale) == 3 and (scale["HB fit"] != MISSING).all()
    cur = curation_table(runs).frame
    seed16 = cur[cur["scale"].str.contains("seed=16")].set_index("iteration")
    assert seed16.loc["curate_0", "runs"] == "2" and seed16.loc["curate_1", "runs"] == "1"
    assert seed16.loc["curate_0", "kept fraction"] == "0.250" and seed16.loc["curate_1", "kept fraction"] == "0.500"
    assert seed16.loc["curate_0", "score histogram"] == "1:4 2:6 3:10 4:12 5:8"
    assert seed16.loc["curate_0", "paper P / R"] == "0.44 / 0.09" and seed16.loc["curate_1", "paper P / R"] == "0.52 / 0.44"


def test_cli_writes_markdown_and_csv(fixture_runs_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from bft.report.cli import main

    out = tmp_path / "reports"
    assert main([str(fixture_runs_root), "--out", str(out), "--wandb", "not-a-project-path"]) == 0
    printed = capsys.readouterr().out
    assert "4 run(s) found" in printed and "W&B runs not loaded" in printed
    report = (out / "report.md").read_text()
    assert "74.38" in report and MISSING in report and "| Alpaca-GPT4 | 71.17 | — |" in report
    assert "| Alpaca-GPT4 | BFT Table 1 | 35.50 |" in report  # in the not-comparable table
    for key in ("table1", "table2", "table10", "not_comparable", "corpus_ablation", "seed_size", "rewriter", "data_scale", "curation"):
        assert (out / f"{key}.md").is_file()
        assert not pd.read_csv(out / f"{key}.csv", dtype=str).empty


# --- notebook ------------------------------------------------------------------------------------------------


def test_inject_parameters_needs_tagged_cell():
    import nbformat

    from bft.report.notebooks import inject_parameters

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    with pytest.raises(ValueError):
        inject_parameters(nb, {"x": 2})
    nb.cells[0].metadata["tags"] = ["parameters"]
    assert inject_parameters(nb, {"x": 2, "paths": ["a"]}).cells[0].source == "x = 2\npaths = ['a']\n"


@pytest.mark.slow  # starts a Jupyter kernel
def test_results_notebook_runs_headless(fixture_runs_root: Path, tmp_path: Path):
    from jupyter_client.kernelspec import find_kernel_specs

    from bft.report.notebooks import RESULTS_NOTEBOOK, run_notebook

    if "python3" not in find_kernel_specs():
        pytest.skip("no python3 Jupyter kernel (python -m ipykernel install --user)")
    report_dir = tmp_path / "nb_reports"
    run_notebook(
        RESULTS_NOTEBOOK,
        {"RUNS_DIR": [str(fixture_runs_root)], "REPORT_DIR": str(report_dir)},
        cwd=tmp_path,
        output=report_dir / "results.ipynb",
        timeout=120,
    )
    figures = report_dir / "figures"
    for name in (
        "win_rate_vs_seed_size",
        "win_rate_vs_data_scale",
        "win_rate_per_rewriter",
        "curation_score_histograms",
        "curated_lengths",
    ):
        assert (figures / f"{name}.png").stat().st_size > 1000, name


@pytest.mark.slow  # starts a Jupyter kernel
def test_results_notebook_skips_empty_groups(tmp_path: Path):
    from jupyter_client.kernelspec import find_kernel_specs

    from bft.report.notebooks import RESULTS_NOTEBOOK, run_notebook

    if "python3" not in find_kernel_specs():
        pytest.skip("no python3 Jupyter kernel")
    nb = run_notebook(
        RESULTS_NOTEBOOK, {"RUNS_DIR": str(tmp_path / "none"), "REPORT_DIR": str(tmp_path / "r")}, cwd=tmp_path, timeout=120
    )
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "skipped seed_size" in text and "skipped lengths" in text
    assert not list((tmp_path / "r" / "figures").glob("*.png"))


# --- seeds and paired comparisons (hand-written summary.json + alpaca_eval annotations.json) ------------------


def _seed_run(root: Path, setting: str, seed: int, prefs: list[float], rewriter: str) -> None:
    run_dir = root / "multirun" / f"{setting}_seed{seed}"
    judged = run_dir / "evaluate" / "alpaca_eval" / "m" / "annotator"
    judged.mkdir(parents=True)
    (judged / "annotations.json").write_text(json.dumps([{"instruction": f"q{i}", "preference": p} for i, p in enumerate(prefs)]))
    summary = {
        "run": {
            "name": f"{setting}_{seed}",
            "method": "backandforth",
            "model": "smollm2_135m",
            "seed_size": 16,
            "rewriter": rewriter,
            "eval_set": "embedded",
            "tags": ["local"],
            "seed": seed,
        },
        "win_rate": 100 * (sum(prefs) / len(prefs) - 1),
        "standard_error": 5.0,
        "annotator": "local",
        "reference": "base",
        "leaderboard": str(run_dir / "evaluate" / "leaderboard.json"),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_seed_sweep_mean_ci_and_paired_verdicts(tmp_path: Path):
    from bft.report.seeds import comparisons_frame, seeds_table_frame

    rng = np.random.default_rng(0)
    n = 60
    for seed in (0, 1, 2):
        base = rng.choice([1.0, 2.0], size=n).tolist()
        _seed_run(tmp_path, "weak", seed, base, "none")
        strong = [2.0 if (p == 1.0 and i % 2 == 0) else p for i, p in enumerate(base)]  # wins half of weak's losses
        _seed_run(tmp_path, "strong", seed, strong, "smollm2_135m")
        noisy = [3.0 - p if i in (seed, seed + 7) else p for i, p in enumerate(base)]  # two flips: noise
        _seed_run(tmp_path, "noisy", seed, noisy, "seed_model")
    runs = load_runs([tmp_path])
    seeds = seeds_table_frame(runs)
    assert len(seeds) == 3 and (seeds["runs"] == "3").all() and (seeds["seeds"] == "0 1 2").all()
    assert (seeds["judge calibration"] == "uncalibrated").all()
    weak = runs[runs["rewriter"] == "none"]["win_rate"].tolist()
    mean, sd = float(np.mean(weak)), float(np.std(weak, ddof=1))
    expected = f"{mean:.2f} ± {4.302652729911275 * sd / np.sqrt(3):.2f}"
    assert seeds[seeds["setting"].str.contains("rewriter=none")]["win rate"].item() == expected
    comp = comparisons_frame(runs)
    assert len(comp) == 3 and comp["paired on"].str.contains("180 \\(seed, instruction\\) pairs").all()

    def verdict(a: str, b: str) -> str:
        row = comp[comp["A"].str.contains(f"rewriter={a}") & comp["B"].str.contains(f"rewriter={b}")]
        if row.empty:
            row = comp[comp["A"].str.contains(f"rewriter={b}") & comp["B"].str.contains(f"rewriter={a}")]
            return {"A better": "B better", "B better": "A better"}.get(row["verdict"].item(), row["verdict"].item())
        return row["verdict"].item()

    assert verdict("smollm2_135m", "none") == "A better"
    assert verdict("seed_model", "none") == "within noise"


def test_calibration_cell_shows_the_latest_measured_agreement():
    from bft.report.seeds import calibration_cell

    old = {"agreement": 0.40, "longer_wins_agreement": 0.45, "n_pairs": 50, "gold": "g.jsonl", "created_at": "2026-01-01"}
    new = {**old, "agreement": 0.55, "n_pairs": 200, "created_at": "2026-02-01"}
    cell = calibration_cell([{"judge_calibration": old}, {"judge_calibration": new}])
    assert cell == "agrees 55.0% (longer wins 45.0%, n=200, g.jsonl)"
    assert calibration_cell([{"judge_calibration": None}]) == "uncalibrated"
