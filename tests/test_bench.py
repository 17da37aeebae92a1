"""bft-bench end to end on the tiny model: every figure is measured, written to JSON and shown in the table."""

from __future__ import annotations

import json
from pathlib import Path

from bft.bench.cli import main, speedup_ceiling


def test_bench_reports_every_measure(tmp_path: Path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--model", "tiny", "--quick", "--skip-sft", "--prompts", "4", "--new-tokens", "4", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["matmul"]["bf16_flops"] > 0 and report["matmul"]["fp32_flops"] > 0
    assert report["generation"]["params"] > 0  # counted on the unpacked model
    for w in report["generation"]["workloads"].values():
        assert w["bft_tokens_per_s"] > 0 and w["baseline_fp32_b16_tokens_per_s"] > 0
        assert w["processed_tokens_per_new_token"] > 1 and w["bft_flops_incl_prompt"] > w["bft_flops"]
        assert w["speedup_ceiling"] > 0
    cur = report["curation"]
    for mode in ("generate", "generate_plain_fp32", "generate_n", "logprob"):
        assert cur[mode]["pairs_per_s"] > 0
    assert cur["logprob_vs_generate"] > 0 and cur["logprob_vs_generate_plain_fp32"] > 0
    assert cur["logprob"]["tokens_run_per_pair"] > 0 and cur["logprob_vs_generate_ceiling"] > 0
    assert report["peak_rss_mb"] > 0
    table = capsys.readouterr().out
    assert "curation logprob vs generate through plain fp32 model.generate" in table


def test_speedup_ceiling_counts_prompt_tokens():
    # 1B params at 600 GFLOP/s run 300 tokens/s; with 2 prompt tokens per new token that is 100 new tokens/s
    workload = {"processed_tokens_per_new_token": 3.0, "baseline_fp32_b16_tokens_per_s": 50.0}
    assert speedup_ceiling(workload, peak_flops=600e9, params=10**9) == 2.0
