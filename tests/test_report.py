"""bft.report: loader, run -> paper-row mapping, tables, Markdown / CSV output and the results notebook (offline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bft.report.aggregate import MISSING, estimate
from bft.report.load import find_summaries, frame, load_runs
from bft.report.mapping import corpus_row, mismatches, pairs, place, recipe, run_method, scale_of
from bft.report.paper_tables import table_of, table_rows
from bft.report.tables import (
    corpus_table,
    curation_table,
    data_scale_table,
    fit_intercept,
    not_comparable_table,
    paper_table,
    seed_size_table,
)

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


def test_run_methods_and_corpus_names():
    assert run_method({"method": "backandforth"}) == "backandforth"
    assert run_method({"method": "baseline_dataset", "baseline_file": "open_orca.jsonl"}) == "baseline_dataset:Open Orca"
    assert run_method({"method": "baseline_dataset", "baseline_file": "dolly.jsonl"}) == "baseline_dataset:dolly.jsonl"
    assert scale_of(["x", "paper"]) == "paper" and scale_of(["local"]) == "local" and scale_of(None) == "?"
    assert scale_of([], "smollm2_135m") == "local" and scale_of([], "meta-llama/Llama-2-7b-hf") == "?"
    assert corpus_row("allenai/c4") == "C4" and corpus_row("allenai/dolma") == "Dolma head" and corpus_row("embedded") is None
    assert corpus_row("allenai/dolma", "middle") == "Dolma middle" and corpus_row("/data/clueweb_segments.jsonl") == "ClueWeb"


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


# --- paper rows: a run sits beside a row only when every setting the row declares matches ------------------------

S_A, S_W = "Answer in the style of an AI Assistant.", "Answer with knowledge from web search."
LLAMA2_7B, LLAMA2_70B = "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-70b-hf"


def paper_run(name: str, **changes: Any) -> dict[str, Any]:
    """One run's report fields (as load_runs flattens summary.json) for BFT Table 1 "Dolma + filtering + rewriting"."""
    run = {
        "name": name,
        "method": "backandforth",
        "model": LLAMA2_7B,
        "models": {"backward": LLAMA2_70B, "curation": LLAMA2_70B, "final": LLAMA2_7B},
        "seed_source": "oasst1",
        "seed_size": 3200,
        "corpus": "allenai/dolma",
        "corpus_bucket": "head",
        "rewriter": "meta-llama/Llama-2-70b-chat-hf",
        "max_generated": 12800,
        "eval_set": "ae1",
        "annotator": "alpaca_eval_gpt4",
        "reference": "dataset",
        "seed_tag": S_A,
        "web_tag": S_W,
        "inference_tag": S_A,
        "final_steps": 600,
        "final_lr": 1e-5,
        "tags": ["backandforth", "paper", "table1"],
        "win_rate": 74.0,
        "standard_error": 1.5,
        "n_generated": 12800,
        "n_seed": 3200,
        "seed": 0,
    }
    return run | changes


def _frame(*runs: dict[str, Any]) -> pd.DataFrame:
    return frame(runs)


def _why_not(runs: pd.DataFrame, name: str) -> pd.Series:
    shown = not_comparable_table(runs).frame.set_index("run")
    return shown.loc[name]


def _beside(runs: pd.DataFrame, table: str, row: str, column: str = "this project") -> list[str]:
    frame_ = paper_table(runs, table).frame
    return frame_[frame_.iloc[:, 0] == row][column].tolist()


def test_a_matching_run_sits_beside_its_row_and_is_labelled_by_its_pairs():
    runs = _frame(paper_run("bft_7b"))
    assert _beside(runs, "table1", "Dolma + filtering + rewriting") == ["74.00"]
    assert _beside(runs, "table1", "Dolma + filtering + rewriting", "pairs") == ["12,800 generated + 3,200 seed"]
    assert not_comparable_table(runs).frame.empty
    # the pair count comes from n_generated, with n_train_pairs or a recorded shortfall where the summary has them
    p = pairs({"n_generated": 12000, "n_train_pairs": 15200, "target_generated": 12800, "shortfall": 800})
    assert p.label == "12,000 of 12,800 generated (short 800) + 3,200 seed"


@pytest.mark.parametrize(
    ("changes", "first"),
    [
        # a 3.2K point of the data-scale sweep (and the corpus sweep, which runs at 3.2K too)
        ({"max_generated": 3200, "n_generated": 3200}, "generated pairs 3,200 (paper: 12,800)"),
        ({"corpus": "allenai/c4", "max_generated": 3200, "n_generated": 3200}, "generated pairs 3,200 (paper: 12,800)"),
        ({"corpus": "allenai/c4"}, "corpus C4 (paper: Dolma head)"),
        ({"corpus_bucket": "middle"}, "corpus Dolma middle (paper: Dolma head)"),
        # a seed-size sweep point
        ({"seed_size": 100, "n_seed": 100}, "seed pairs 100 (paper: 3,200)"),
        # a run that fell short of its 12.8K target
        ({"n_generated": 9000}, "generated pairs 9,000 of a target 12,800 (short 3,800) (paper: 12,800)"),
        ({"models": {"final": "meta-llama/Llama-2-13b-hf"}}, "model size 13b (paper: 7b)"),
        ({"eval_set": "embedded"}, "eval set embedded (paper: ae1)"),
        ({"annotator": "local"}, "judge local (paper: alpaca_eval_gpt4)"),
        ({"reference": "base"}, "reference base (paper: dataset)"),
    ],
)
def test_a_run_that_differs_in_one_setting_is_not_comparable_and_says_which(changes: dict[str, Any], first: str):
    runs = _frame(paper_run("other", **changes))
    assert _beside(runs, "table1", "Dolma + filtering + rewriting") == [MISSING]  # never beside the 74.38
    why = _why_not(runs, "other")
    assert why["nearest paper row"] == "Dolma + filtering + rewriting" and why["table"] == "BFT Table 1"
    assert why["first mismatch"] == first


def test_humpback_paper_on_c4_is_not_beside_the_clueweb_humpback_data_row():
    humpback = {"method": "humpback", "rewriter": "none", "corpus": "allenai/c4", "corpus_bucket": None}
    humpback |= {"models": {"final": LLAMA2_7B}, "inference_tag": f"{S_A} {S_W}", "tags": ["humpback", "paper"]}
    runs = _frame(paper_run("hb_c4", **humpback))
    assert _beside(runs, "table1", "ClueWeb + filtering (Humpback data)") == [MISSING]
    why = _why_not(runs, "hb_c4")
    assert why["nearest paper row"] == "ClueWeb + filtering (Humpback data)"
    assert why["first mismatch"] == "corpus C4 (paper: ClueWeb)"
    on_clueweb = _frame(paper_run("hb_clueweb", **(humpback | {"corpus": "/data/clueweb_segments.jsonl"})))
    assert _beside(on_clueweb, "table1", "ClueWeb + filtering (Humpback data)") == ["74.00"]


def test_ae2_runs_fill_table_10_and_not_table_2():
    ae2 = {"eval_set": "ae2", "annotator": "weighted_alpaca_eval_gpt4_turbo", "models": {"final": LLAMA2_70B}}
    ae2 |= {"max_generated": 51200, "n_generated": 51200, "win_rate": 12.5, "length_controlled_winrate": 17.1}
    runs = _frame(paper_run("bft_70b_ae2", **ae2, tags=["backandforth", "paper", "table2"]))
    t10 = paper_table(runs, "table10").frame.set_index("data")
    assert t10.loc["Dolma + filtering + rewriting", "paper LC"] == "16.68"
    assert t10.loc["Dolma + filtering + rewriting", "this project LC"] == "17.10"
    assert t10.loc["Dolma + filtering + rewriting", "this project raw"] == "12.50"
    assert _beside(runs, "table2", "Dolma + filtering + rewriting 51.2K") == [MISSING]
    assert not_comparable_table(runs).frame.empty  # it sits beside Table 10: not listed as not comparable


def test_hb_table_4_rows_are_told_apart_by_the_inference_tag():
    hb = {"method": "humpback", "corpus": "/data/clueweb_segments.jsonl", "tags": ["humpback", "paper"]}
    runs = _frame(
        paper_run("hb_both", **hb, inference_tag=f"{S_A} {S_W}", win_rate=66.0),
        paper_run("hb_sa", **hb, inference_tag=S_A, win_rate=63.0),
        paper_run("hb_untagged", **hb, seed_tag="", web_tag="", inference_tag="", win_rate=60.0),
    )
    t4 = paper_table(runs, "hb_table4").frame.set_index("tags (training; inference)")
    assert t4.loc["S_a on seed, S_w on augmented; inference S_a + S_w", ["paper", "paper SE", "this project"]].tolist() == [
        MISSING,  # not in the reference: left empty, not quoted from memory
        MISSING,
        "66.00",
    ]
    assert t4.loc["S_a on seed, S_w on augmented; inference S_a", "this project"] == "63.00"
    assert t4.loc["no system prompt in training or inference", "this project"] == "60.00"
    assert t4.loc["S_a on seed, S_w on augmented; no system prompt at inference", "this project"] == MISSING
    # a summary from before the tags were recorded cannot be told apart: not comparable, saying so
    old = _frame(paper_run("hb_old", **hb, inference_tag=None, seed_tag=None, web_tag=None))
    assert set(paper_table(old, "hb_table4").frame["this project"]) == {MISSING}
    assert [table_of(row) for row in place(old.iloc[0].to_dict()).rows] == ["table1"]  # ClueWeb + filtering, 12.8K
    hb4 = table_rows("hb_table4")[0].settings  # S_a + S_w
    assert str(mismatches(old.iloc[0].to_dict(), hb4)[0]) == "training tags not recorded (paper: seed/web)"


def test_the_step_sweep_shows_the_best_of_three_per_learning_rate():
    sweep = [
        paper_run(f"s{steps}_lr{lr}_seed{seed}", final_steps=steps, final_lr=lr, seed=seed, win_rate=wr)
        for steps, lr, seed, wr in [
            (600, 1e-5, 0, 70.0),
            (900, 1e-5, 0, 72.0),
            (900, 1e-5, 1, 74.0),
            (1200, 1e-5, 0, 71.0),
            (600, 2e-5, 0, 69.0),
            (1200, 2e-5, 0, 68.0),
        ]
    ]
    table = paper_table(_frame(*sweep), "table1").frame
    lines = table[table["data"] == "Dolma + filtering + rewriting"].set_index("variant")
    best = lines.loc["final_lr=1e-05"]
    assert best["this project"] == "73.00" and best["runs"] == "2"  # 900 steps: mean of its two seeds, not of all six
    assert best["selection"] == (
        "best of 3 step count(s) run (600: 70.00, 900: 73.00 (best), 1200: 71.00); paper: best of 600 / 900 / 1200 final-model steps"
    )
    assert lines.loc["final_lr=2e-05", "this project"] == "69.00"
    assert lines.loc["final_lr=2e-05", "selection"].startswith("best of 2 step count(s) run (600: 69.00 (best), 1200: 68.00)")


def test_corpus_table_checks_every_setting():
    c4 = {"method": "filter_only", "rewriter": "none", "corpus": "allenai/c4", "max_generated": 3200, "n_generated": 3200}
    runs = _frame(
        paper_run("c4_filter", **c4, win_rate=66.0),
        paper_run("c4_bft", **(c4 | {"method": "backandforth"}), win_rate=67.0),
        paper_run("c4_filter_local_judge", **c4, annotator="local", win_rate=90.0),
    )
    corpus = corpus_table(runs).frame.set_index("corpus")
    assert corpus.loc["C4", ["paper", "this project", "runs"]].tolist() == ["66.83", "66.00", "1"]
    assert corpus.loc["Dolma head", "this project"] == MISSING
    assert _why_not(runs, "c4_filter_local_judge")["first mismatch"] == "judge local (paper: alpaca_eval_gpt4)"
    assert _why_not(runs, "c4_bft")["first mismatch"] == "generated pairs 3,200 (paper: 12,800)"  # no corpus row rewrites
    assert "embedded" not in corpus_table(_frame(paper_run("local", corpus="embedded"))).frame["corpus"].tolist()


def test_every_run_of_a_known_method_is_placed_or_explained():
    runs = [paper_run(f"r{i}", **c) for i, c in enumerate([{}, {"corpus": "allenai/c4"}, {"seed_size": 100, "n_seed": 100}])]
    for run in runs:
        placed = place(run)
        assert placed.comparable or (placed.nearest is not None and placed.why_not)


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
    # in the not-comparable table: the local baseline run, its pairs, its nearest row and the first setting that differs
    assert "| fixture_baseline_alpaca | 16 generated | Alpaca-GPT4 | BFT Table 1 | 35.50 |" in report
    assert "generated pairs 16 (paper: 12,800)" in report
    for key in ("table1", "table2", "table10", "corpus_ablation", "hb_table4", "hb_headline", "not_comparable"):
        assert (out / f"{key}.md").is_file()
        assert not pd.read_csv(out / f"{key}.csv", dtype=str).empty
    for key in ("seed_size", "rewriter", "data_scale", "curation"):
        assert not pd.read_csv(out / f"{key}.csv", dtype=str).empty


def _summary_json(run: dict[str, Any]) -> dict[str, Any]:
    """summary.json as bft writes it (bft.pipeline.summary): run settings under "run", metrics at the top."""
    metrics = ("win_rate", "standard_error", "length_controlled_winrate", "n_generated", "n_seed", "annotator", "reference")
    return {"run": {k: v for k, v in run.items() if k not in metrics}, **{k: run.get(k) for k in metrics}}


def test_cli_fills_table_10_and_hb_table_4_from_run_folders(tmp_path: Path):
    from bft.report.cli import main

    ae2 = {"eval_set": "ae2", "annotator": "weighted_alpaca_eval_gpt4_turbo", "models": {"final": LLAMA2_70B}}
    ae2 |= {"max_generated": 51200, "n_generated": 51200, "win_rate": 12.5, "length_controlled_winrate": 17.1}
    hb = {"method": "humpback", "corpus": "/data/clueweb_segments.jsonl", "inference_tag": f"{S_A} {S_W}", "win_rate": 65.5}
    for name, run in (("bft_70b_ae2", paper_run("bft_70b_ae2", **ae2)), ("hb_7b", paper_run("hb_7b", **hb))):
        folder = tmp_path / "outputs" / name / "2026-01-01_00-00-00"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(_summary_json(run)))
    out = tmp_path / "reports"
    assert main([str(tmp_path / "outputs"), "--out", str(out)]) == 0
    t10 = pd.read_csv(out / "table10.csv", dtype=str).set_index("data")
    assert t10.loc["Dolma + filtering + rewriting", "this project LC"] == "17.10"
    t4 = pd.read_csv(out / "hb_table4.csv", dtype=str).set_index("tags (training; inference)")
    assert t4.loc["S_a on seed, S_w on augmented; inference S_a + S_w", "this project"] == "65.50"
    assert "HB Table 4" in (out / "report.md").read_text()
    assert pd.read_csv(out / "not_comparable.csv", dtype=str).empty


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
