"""End-to-end smoke test of every stage on the tiny model, artifact reuse, and partial recomputation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.in_process import run_in_process

from bft.data.io import read_jsonl

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One full smoke run (tiny model), shared by the tests of this module."""
    root = tmp_path_factory.mktemp("smoke")
    artifacts = root / "artifacts"

    def run(*overrides: str, name: str):
        base = ["debug=smoke", "curation.labels=embedded", f"run.artifacts_dir={artifacts}"]
        return run_in_process(root / name, *base, *overrides)

    return {"first": run(name="first"), "run": run, "artifacts": artifacts, "root": root}


def test_every_stage_runs_and_writes_a_manifest(smoke):
    ctx = smoke["first"]
    names = [r.stage for r in ctx.reports]
    assert names == [
        "seed",
        "corpus",
        "backward_model",
        "augment",
        "seed_model",
        "curate_0",
        "rewrite",
        "train_data",
        "final_model",
        "eval_outputs",
        "base_outputs",
        "evaluate",
    ]
    assert not any(r.reused for r in ctx.reports)
    for report in ctx.reports:
        manifest = json.loads((report.path / "manifest.json").read_text())
        assert manifest["key"] == report.key and manifest["versions"]["torch"]
        assert "counts" in manifest and "seconds" in manifest
        for name, digest in manifest["files"].items():
            assert (report.path / name).exists() and len(digest) == 64
    summary = ctx.summary
    assert 0.0 <= summary["win_rate"] <= 100.0 and summary["n"] == 4
    assert Path(summary["final_model"], "adapter_config.json").exists()
    assert (ctx.run_dir / "summary.json").exists()
    assert "near_duplicate" in summary["corpus_filters"]["removed"] and Path(summary["corpus_filters"]["file"]).is_file()
    assert set(summary["decontaminated"]) == {"seed", "generated"}


def test_bft_report_reads_the_settings_a_paper_row_checks_from_summary_json(smoke):
    """summary.json carries what bft-report matches paper rows on (tags, steps, pairs); a local run is not comparable."""
    from bft.report.load import load_runs
    from bft.report.mapping import pairs, place, run_settings

    run = load_runs([smoke["first"].run_dir]).iloc[0].to_dict()
    settings = run_settings(run)
    assert settings["inference_tag"] == "seed" and settings["train_tags"] == "seed/web"
    assert settings["method"] == "backandforth" and settings["eval_set"] == "embedded" and settings["judge"] == "local"
    assert run["final_steps"] == smoke["first"].cfg.sft.final.max_steps
    assert pairs(run).generated == smoke["first"].summary["n_generated"] and pairs(run).seed is not None
    placed = place(run)
    assert not placed.comparable and placed.nearest is not None and placed.why_not


def test_every_generation_stage_records_the_device_it_ran_on(smoke):
    """``generation.device=auto``: the GPU where there is one (tests/test_gpu.py), else the CPU; the local judge too."""
    from bft.config.machine import resolve_device

    expected = resolve_device("auto")  # cuda:0 or cpu
    generating = ("augment", "curate_0", "rewrite", "eval_outputs", "base_outputs", "evaluate")
    for report in smoke["first"].reports:
        if report.stage in generating:
            metrics = json.loads((report.path / "manifest.json").read_text())["metrics"]
            assert metrics["device"] == expected, report.stage


def test_curation_accounting_and_label_quality_reach_the_summary(smoke):
    curation = smoke["first"].summary["curation"]["curate_0"]
    assert sum(curation["score_histogram"].values()) == smoke["first"].reports[5].records_in
    assert 0.0 <= curation["parse_failure_rate"] <= 1.0 and curation["kept"] >= 1
    assert curation["kept_lengths"]["n"] == curation["kept"]
    assert curation["kept_lengths"]["n"] + curation["dropped_lengths"]["n"] == smoke["first"].reports[5].records_in
    labels = curation["labels"]
    assert set(labels) == {"precision", "recall", "auc"}
    assert 0.0 <= labels["precision"] <= 1.0 and 0.0 <= labels["recall"] <= 1.0


def test_records_keep_their_provenance(smoke):
    ctx = smoke["first"]
    generated = read_jsonl(ctx.artifacts["rewrite"].file("generated.jsonl"))
    assert generated
    for row in generated:
        for key in (
            "id",
            "source_id",
            "text",
            "instruction",
            "backward_raw",
            "backward_model",
            "score",
            "judge_raw",
            "judge_model",
            "output",
            "rewriter_raw",
            "rewriter",
        ):
            assert key in row, key
    scored = read_jsonl(ctx.artifacts["curate_0"].file("scored.jsonl"))
    kept = [r for r in scored if r["kept"]]
    assert len(kept) == len(read_jsonl(ctx.artifacts["curate_0"].file("curated.jsonl")))
    train = read_jsonl(ctx.artifacts["train_data"].file("train.jsonl"))
    seed_rows = [r for r in train if r["origin"] == "seed"]
    web_rows = [r for r in train if r["origin"] == "generated"]
    assert all(r["prompt"].endswith("Answer in the style of an AI Assistant.") for r in seed_rows)
    assert all(r["prompt"].endswith("Answer with knowledge from web search.") for r in web_rows)
    decontaminated = ctx.artifacts["train_data"].manifest["counts"]["decontaminated"]
    assert set(decontaminated) >= {"exact", "ngram", "embedding"}
    assert sum(decontaminated.values()) == len(read_jsonl(ctx.artifacts["train_data"].file("decontaminated.jsonl")))


def test_same_config_again_reuses_every_stage(smoke):
    again = smoke["run"](name="again")
    assert all(r.reused for r in again.reports)
    assert again.summary["win_rate"] == smoke["first"].summary["win_rate"]


def test_rewriter_none_recomputes_only_what_follows_the_corpus_and_the_models(smoke):
    """The corpus stage budgets the rewrite prompt (bft.context_budget), so dropping the rewriter changes the corpus
    and what reads it; the trained models and the base outputs are reused."""
    ctx = smoke["run"]("rewriter=none", name="filter_only")
    status = {r.stage: r.reused for r in ctx.reports}
    for stage in ("seed", "backward_model", "seed_model", "base_outputs"):
        assert status[stage], stage
    for stage in ("corpus", "augment", "curate_0", "rewrite", "train_data", "final_model", "eval_outputs", "evaluate"):
        assert not status[stage], stage
    generated = read_jsonl(ctx.artifacts["rewrite"].file("generated.jsonl"))
    assert all(r["output"] == r["text"] and r["rewriter"] == "none" for r in generated)


PLANTED = "sk-PLANTED-fake-key-0123456789abcdef"


def test_cli_reuses_the_store_and_prints_the_summary_table(smoke):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "OPENAI_API_KEY": PLANTED,
        "WANDB_API_KEY": PLANTED,
        "HF_TOKEN": PLANTED,
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bft.cli",
            "debug=smoke",
            "curation.labels=embedded",
            "logger=wandb_offline",
            f"run.artifacts_dir={smoke['artifacts']}",
            f"hydra.run.dir={smoke['root'] / 'cli'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=smoke["root"],
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reused" in result.stdout and "AlpacaEval win rate" in result.stdout
    assert "curated dataset:" in result.stdout and "final model/adapter:" in result.stdout
    flowing = " ".join(result.stdout.split())  # rich wraps long lines at the console width
    assert "parse failures" in flowing and "kept/dropped mean chars" in flowing
    assert "corpus filters: " in flowing and "decontaminated against the eval set: seed " in flowing
    assert "computed" not in result.stdout
    wandb_dirs = list((smoke["root"] / "cli").glob("wandb/offline-run-*"))
    assert wandb_dirs, "the W&B offline run folder is missing"


def test_no_secret_appears_in_any_written_file(smoke):
    """Runs after the CLI test, which had keys planted in its environment and W&B logging on."""
    written = [p for p in smoke["root"].rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in written)
    for path in written:
        assert PLANTED.encode() not in path.read_bytes(), path


def test_skip_mode_finishes_a_run_on_a_dirty_corpus_and_reports_the_skips(smoke, tmp_path):
    from test_bad_input import write_bad_corpus

    corpus = write_bad_corpus(tmp_path / "dirty.jsonl")
    ctx = smoke["run"]("corpus=file", f"corpus.source={corpus}", "data.on_error=skip", name="dirty")
    counts = ctx.artifacts["corpus"].manifest["counts"]
    assert counts["skipped_input"] == {"malformed_json": 1, "empty_field": 1, "non_utf8": 1, "duplicate_id": 1, "missing_field": 1}
    assert counts["in"] == 6
    assert ctx.summary["win_rate"] is not None
