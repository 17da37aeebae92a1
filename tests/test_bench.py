"""bft-bench end to end on the tiny model: every figure is measured, written to JSON and shown in the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bft.bench.cli import main, speedup_ceiling
from bft.bench.workload import shipped_lengths
from bft.models.registry import cpu_has_bf16


@pytest.mark.slow  # runs every bench measure on the tiny model
def test_bench_reports_every_measure(tmp_path: Path, capsys):
    out = tmp_path / "bench.json"
    args = ["--model", "tiny", "--quick", "--skip-sft", "--prompts", "4", "--new-tokens", "4", "--corpus", "", "--out", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["matmul"]["fp32_flops"] > 0
    bf16 = report["matmul"]["bf16_flops"]  # measured exactly where bf16 is native
    assert (bf16 is not None) == cpu_has_bf16() and (bf16 is None or bf16 > 0)
    assert report["generation"]["params"] > 0  # counted on the unpacked model
    workloads = report["generation"]["workloads"]
    assert set(workloads) == {"augment", "augment_real", "answer"}
    # the real shape: the shipped token lengths of a real corpus (no data file read by the test)
    assert report["generation"]["real_documents"].startswith("synthetic")
    lengths = shipped_lengths()[:4]
    assert workloads["augment_real"]["mean_prompt_tokens"] > sum(lengths) / 4 > workloads["augment"]["mean_prompt_tokens"] / 2
    for w in workloads.values():
        assert w["bft_tokens_per_s"] > 0 and w["baseline_fp32_b16_tokens_per_s"] > 0
        assert w["processed_tokens_per_new_token"] > 1 and w["bft_flops_incl_prompt"] > w["bft_flops"]
        assert w["speedup_ceiling"] > 0
        assert 0 <= w["prefill_padding_fraction"] < 1 and 0 < w["decode_kv_padding_fraction"] < 1
    cur = report["curation"]
    for mode in ("generate", "generate_plain_fp32", "generate_n", "logprob", "logprob_real"):
        assert cur[mode]["pairs_per_s"] > 0
    assert cur["logprob_vs_generate"] > 0 and cur["logprob_vs_generate_plain_fp32"] > 0
    assert cur["logprob"]["tokens_run_per_pair"] > 0 and cur["logprob_vs_generate_ceiling"] > 0
    assert report["peak_rss_mb"] > 0
    table = capsys.readouterr().out
    assert cur["logprob_real"]["tokens_run_per_pair"] > cur["logprob"]["tokens_run_per_pair"]
    assert "curation logprob vs generate through plain fp32 model.generate" in table
    assert "generation augment_real" in table and "curation logprob_real" in table


def test_speedup_ceiling_counts_prompt_tokens():
    # 1B params at 600 GFLOP/s run 300 tokens/s; with 2 prompt tokens per new token that is 100 new tokens/s
    workload = {"processed_tokens_per_new_token": 3.0, "baseline_fp32_b16_tokens_per_s": 50.0}
    assert speedup_ceiling(workload, peak_flops=600e9, params=10**9) == 2.0


def test_real_documents_have_the_shipped_token_lengths():
    from bft.bench.workload import real_documents
    from bft.models.registry import load_tokenizer

    tok = load_tokenizer("tiny")
    docs, source = real_documents(6, tok, corpus=None)
    assert source.startswith("synthetic")
    assert [len(tok(d, add_special_tokens=False)["input_ids"]) for d in docs] == shipped_lengths()[:6]


def test_real_documents_read_a_corpus_with_the_corpus_filter(tmp_path: Path):
    from bft.bench.workload import real_documents

    corpus = tmp_path / "c.jsonl"
    texts = ["short", "a" * 700, "b" * 4000, "c" * 2000]
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    docs, source = real_documents(5, None, corpus)
    assert docs == ["a" * 700, "c" * 2000] and source == str(corpus)
