"""``data.max_generated`` is reached by reading more of the corpus, or the shortfall is stated (bft.pipeline.target).

The pipeline runs are the real runner on the tiny model (``debug=smoke``) with the papers' generate-mode curation
(score 5 kept), over a corpus file in which none of the first 35 documents and one in ten of the later ones can
score 5: the first round (sized at BFT's 13.6%) keeps nothing, and the runner must read further. A TEST-ONLY scripted
backend stands in for the text a random model cannot write (an instruction, a rating); nothing in ``bft`` can
select it.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from bft.pipeline.target import (
    BFT_SCORE5,
    DOLMA_CONTEXT_KEEP,
    Round,
    documents_needed,
    first_budget,
    next_budget,
    shortfall_line,
    target_summary,
)

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------ pure: rates and rounds


def test_the_70b_paper_target_needs_documents_at_bft_keep_rates(compose_cfg):
    cfg = compose_cfg("+experiment=backandforth_70b_paper")
    assert cfg.corpus.max_documents is None  # the paper corpora are read as far as the target needs
    needed = documents_needed(cfg)
    assert needed == 501_961 == -(-51_200 // (DOLMA_CONTEXT_KEEP * BFT_SCORE5))
    assert first_budget(cfg) > needed


def test_no_target_keeps_the_corpus_as_configured(compose_cfg):
    assert first_budget(compose_cfg()) is None  # the embedded default: one pass, as before
    assert first_budget(compose_cfg("data.max_generated=10", "data.baseline_file=x.jsonl")) is None
    assert first_budget(compose_cfg("data.max_generated=1000", "corpus.max_documents=50")) == 50  # the cap bounds it


def _cfg(target: int, cap: int | None = None):
    return OmegaConf.create({"data": {"max_generated": target}, "corpus": {"max_documents": cap}})


def test_next_round_reads_more_from_the_measured_yield_until_reached_or_exhausted():
    cfg = _cfg(100)
    budget, why = next_budget(cfg, [Round(1000, 1000, 1, {}, 20)])  # 2% measured: 100 need 5,000 (x margin)
    assert why is None and 5000 < budget <= 8000
    assert next_budget(cfg, [Round(1000, 1000, 1, {}, 0)])[0] == 8000  # nothing kept yet: grow by the maximum
    assert next_budget(cfg, [Round(1000, 1000, 1, {}, 100)]) == (None, "reached")
    assert next_budget(cfg, [Round(1000, 700, 1, {}, 50)])[1] == "the corpus ran out after 700 documents"
    # several files read side by side: fewer than asked is not the end until a longer budget reads no more
    assert next_budget(cfg, [Round(1000, 700, 4, {}, 50)])[1] is None
    assert "ran out" in next_budget(cfg, [Round(1000, 700, 4, {}, 50), Round(2000, 700, 4, {}, 50)])[1]
    assert next_budget(_cfg(100, cap=1000), [Round(1000, 1000, 1, {}, 50)]) == (None, "corpus.max_documents=1,000 reached")


def test_the_shortfall_is_one_line_with_target_reached_documents_and_why():
    rounds = [Round(35, 30, 1, {"corpus kept": 30, "kept by curate_0": 2, "after decontamination": 2}, 2)]
    target = target_summary(_cfg(4), rounds, "the corpus ran out after 30 documents")
    assert target["shortfall"] == 2 and target["reached"] == 2 and target["documents_read"] == 30
    line = shortfall_line(target)
    assert "\n" not in line
    assert line.startswith("data target SHORT: 2 of 4 generated pairs (2 missing) after reading 30 documents")
    assert "the corpus ran out after 30 documents" in line and "kept by curate_0 2" in line


def test_the_dry_run_states_the_documents_51k_pairs_need(compose_cfg, capsys):
    from bft.pipeline.dryrun import print_plan

    print_plan(compose_cfg("+experiment=backandforth_70b_paper", "run.artifacts_dir=/nonexistent"))
    out = " ".join(capsys.readouterr().out.split())
    assert "data target: 51,200 generated pairs need about 501,961 documents at the papers' keep rates" in out
    assert "13.6%" in out and "577,256" in out  # round 1 reads the estimate x the margin


def test_the_report_states_a_run_short_of_its_target(tmp_path, capsys):
    from bft.report.cli import main

    rounds = [Round(35, 30, 1, {"corpus kept": 30, "after decontamination": 2}, 2)]
    target = target_summary(_cfg(4), rounds, "the corpus ran out after 30 documents")
    run = {"name": "filter_only", "method": "filter_only", "tags": [], "max_generated": 4}
    summary = {"run": run, "win_rate": 50.0, "n_generated": 2, "n_train_pairs": 10, "target": target, "shortfall": 2}
    (tmp_path / "outputs" / "r").mkdir(parents=True)
    (tmp_path / "outputs" / "r" / "summary.json").write_text(json.dumps(summary))
    assert main([str(tmp_path / "outputs"), "--out", str(tmp_path / "reports")]) == 0
    out = capsys.readouterr().out
    assert "data target SHORT: 2 of 4 generated pairs (2 missing) after reading 30 documents" in " ".join(out.split())
    report = (tmp_path / "reports" / "data_targets.md").read_text()
    assert "the corpus ran out after 30 documents" in report and "| 4 | 2 | 2 | 30 | 10 |" in report


def _published(folder: Path, digest: str, hashes: list[str], shards: list[str]) -> Path:
    """An artifact folder as the store publishes a generation stage: shards, inputs.json, manifest with checksums."""
    from bft.artifacts.integrity import file_sha256
    from bft.artifacts.shards import shard_path
    from bft.workers.reuse import record_inputs

    (folder / "shards").mkdir(parents=True)
    for i, text in enumerate(shards):
        shard_path(folder, i).write_text(text)
    record_inputs(folder, digest, hashes)
    files = {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    (folder / "manifest.json").write_text(json.dumps({"files": files}))
    return folder


def test_a_longer_prefix_takes_only_the_intact_shards_made_from_the_same_inputs(tmp_path):
    from bft.artifacts.shards import shard_path
    from bft.workers.reuse import adopt_shards, input_hashes

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(5)))
    hashes = input_hashes(source, 2)  # shards [0, 1] [2, 3] [4]
    stage = tmp_path / "augment"
    _published(stage / "aaaa", "job", [hashes[0], hashes[1], "other-input"], ["s0\n", "s1\n", "s2\n"])
    _published(stage / "bbbb", "another-job", hashes, ["x0\n", "x1\n", "x2\n"])
    tampered = _published(stage / "cccc", "job", hashes, ["t0\n", "t1\n", "t2\n"])
    shard_path(tampered, 2).write_text("changed after publishing\n")
    work = stage / "dddd.partial"
    (work / "shards").mkdir(parents=True)
    assert adopt_shards(work, "job", hashes, [0, 1, 2]) == 2  # shard 2: aaaa's input differs, cccc's fails its checksum
    assert [shard_path(work, i).read_text() for i in (0, 1)] == ["s0\n", "s1\n"] and not shard_path(work, 2).exists()


# ------------------------------------------------------------------------------------------ test-only double


class ScriptedBackend:
    """TEST-ONLY: writes an instruction for each document and rates ``Score: 5`` only documents numbered 45, 55,
    65, ... (none of the first 35), ``Score: 2`` the others; answers eval prompts with a short text."""

    prompts: dict[str, int] = {}

    def __init__(self, gen_cfg, model_name: str, adapter: str | None = None) -> None:
        from bft.models.registry import load_tokenizer

        self.tokenizer = load_tokenizer(model_name)
        self.counts: dict[str, float] = {"new_tokens": 0, "sequences": 0}

    def _complete(self, prompt: str) -> str:
        number = re.search(r"number (\d+) keeps", prompt)
        if "Write the most likely question" in prompt:
            kind, text = "backtranslate", f"What is the story of place {number.group(1) if number else '?'}?"
        elif "Please assign a score using the following 5-point scale" in prompt:
            good = number is not None and int(number.group(1)) >= 35 and int(number.group(1)) % 10 == 5
            kind, text = "rate", "Focused and complete.\nScore: 5" if good else "A blog post.\nScore: 2"
        else:
            kind, text = "answer", f"An answer ({zlib.crc32(prompt.encode())})."
        ScriptedBackend.prompts[kind] = ScriptedBackend.prompts.get(kind, 0) + 1
        return text

    def generate(self, prompts, sampling, seed):
        from bft.generation.base import Completion

        out = [Completion(t, len(p), len(t.split()), True) for p, t in ((p, self._complete(p)) for p in prompts)]
        self.counts["sequences"] += len(out)
        self.counts["new_tokens"] += sum(c.new_tokens for c in out)
        return out

    def next_token_logprobs(self, prompts, candidates):
        raise AssertionError("generate-mode curation does not call next_token_logprobs")

    def stats(self) -> dict[str, Any]:
        return dict(self.counts)


_WORDS = ["river", "garden", "engine", "castle", "harbor", "valley", "market", "library", "orchard", "bridge", "forest"]


def _document(i: int) -> str:
    """About 900 characters of distinct prose that passes the corpus filters (as in test_paper_smoke)."""
    rng = random.Random(i)
    place, thing = rng.sample(_WORDS, 2)
    lines = [f"A short history of the {place} {i}", ""]
    for k in range(6):
        a, b = rng.sample(_WORDS, 2)
        lines.append(
            f"The {place} number {i} keeps a record of the {thing} and its {a} near the {b}, and visitors in year "
            f"{1900 + 7 * i + k} wrote that the {a} changed the way people used the {thing}."
        )
    return "\n".join(lines)


def _corpus(path: Path, numbers: range) -> Path:
    path.write_text("".join(json.dumps({"id": f"doc-{i:04d}", "text": _document(i)}) + "\n" for i in numbers))
    return path


@pytest.fixture(scope="module")
def target_runs(tmp_path_factory):
    """Two runs sharing one store: documents 0-99 (target reached in round 2) and 40-69 (3 can score 5: short)."""
    from hydra import compose, initialize_config_dir

    from bft.config.schema import register_configs
    from bft.pipeline import models as pipeline_models
    from bft.pipeline.runner import run_pipeline

    register_configs()
    root = tmp_path_factory.mktemp("target")
    mp = pytest.MonkeyPatch()
    mp.setattr(pipeline_models, "make_backend", ScriptedBackend)
    from helpers.length_judge import JUDGE_MODEL, length_judge_completions  # as the length_judge fixture does

    from bft.eval import judges

    mp.setattr(judges, "hf_logprob_completions", length_judge_completions)

    def run(numbers: range, name: str):
        corpus = _corpus(root / f"corpus_{name}.jsonl", numbers)
        overrides = [
            "debug=smoke", "method=filter_only", "curation=paper", "curation.scoring=generate", "curation.threshold=5",
            "curation.top_fraction=null", "corpus=file", f"corpus.source={corpus}",
            "corpus.max_documents=null", "data.max_generated=4", "eval.annotator=local", f"eval.judge_model={JUDGE_MODEL}",
            f"run.artifacts_dir={root / 'artifacts'}",
        ]  # fmt: skip
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        (root / name).mkdir()
        ScriptedBackend.prompts = {}
        ctx = run_pipeline(cfg, root / name)
        return ctx, dict(ScriptedBackend.prompts)

    try:
        yield {"reached": run(range(100), "reached"), "short": run(range(40, 70), "short")}
    finally:
        mp.undo()


@pytest.mark.slow
def test_a_low_keep_rate_reads_more_of_the_corpus_until_the_target_is_met(target_runs):
    ctx, prompts = target_runs["reached"]
    target = ctx.summary["target"]
    # round 1 reads what 4 pairs need at BFT's 13.6% (35 documents) and keeps none (nothing to rewrite: no error,
    # read further); round 2 asks for 8 x 35 and reads the whole corpus (100), keeping 6, of which train_data takes 4
    assert [r["read"] for r in target["rounds"]] == [35, 100]
    assert [r["generated"] for r in target["rounds"]] == [0, 4]
    assert target["rounds"][0]["funnel"]["kept by curate_0"] == 0
    assert target["shortfall"] == 0 and ctx.summary["shortfall"] == 0
    assert ctx.summary["n_generated"] == 4 and ctx.summary["target_generated"] == 4
    assert ctx.summary["n_train_pairs"] == 4 + ctx.summary["n_seed"]
    assert ctx.summary["documents_read"] == 100
    # round 2 takes round 1's 8 full shards (32 documents) instead of generating them again
    assert prompts["backtranslate"] == 35 + (100 - 32) and prompts["rate"] == 35 + (100 - 32)
    assert "curate_0 (round 1)" in ctx.summary["stages"] and "final_model" in ctx.summary["stages"]
    summary = json.loads((ctx.run_dir / "summary.json").read_text())
    assert summary["target"]["reached"] == 4 and summary["shortfall"] == 0


@pytest.mark.slow
def test_a_corpus_too_small_for_the_target_states_the_shortfall(target_runs, capsys):
    from bft.pipeline.runner import print_summary

    ctx, _ = target_runs["short"]
    summary = json.loads((ctx.run_dir / "summary.json").read_text())
    assert summary["shortfall"] == 1 and summary["n_generated"] == 3 and summary["documents_read"] == 30
    assert summary["target"]["reason"] == "the corpus ran out after 30 documents"
    print_summary(ctx)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("data target")]
    assert len(lines) == 1
    assert lines[0].startswith("data target SHORT: 3 of 4 generated pairs (1 missing) after reading 30 documents")
