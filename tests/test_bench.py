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
    args = ["--model", "tiny", "--quick", "--skip-sft", "--prompts", "4", "--new-tokens", "4", "--pairs", "4"]
    args += ["--logprob-pairs", "4", "--corpus", "", "--roofline-seconds", "0.25", "--out", str(out)]
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


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_fails_in_one_line(capsys):
    assert main(["--device", "cuda", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "bft-bench: error: --device=cuda but this machine has no CUDA GPU; use --device=auto or --device=cpu"


def test_device_roofline_counts_prefill_at_the_peak_and_decode_at_the_larger_bound():
    from bft.bench.device import Counted, generation_figures

    counted, weights, kv_pos, peak, bw = Counted(body=900, head=100), 2_000, 10, 1e6, 1e6
    stats = {"prefill_tokens": 500, "sequences": 5, "new_tokens": 100, "decode_steps": 10, "decode_kv_needed": 300}
    f = generation_figures(stats, 2.0, counted, weights, kv_pos, peak, bw)
    prefill = 2 * (900 * 500 + 100 * 5) / peak  # the LM head runs once per prefilled row
    decode = max(2 * 1000 * 100 / peak, (10 * weights + 300 * kv_pos) / bw)  # max(0.2, 0.023) s: compute-bound here
    assert f["roofline_seconds"] == pytest.approx(prefill + decode) and f["roofline_fraction"] == pytest.approx((prefill + decode) / 2)
    assert f["compute_fraction"] == pytest.approx((2 * (900 * 500 + 100 * 5) + 2 * 1000 * 100) / 2.0 / peak)
    assert f["new_tokens_per_s"] == 50
    memory_bound = generation_figures({**stats, "decode_steps": 1000}, 2.0, counted, weights, kv_pos, peak, bw)
    assert memory_bound["roofline_seconds"] == pytest.approx(prefill + (1000 * weights + 300 * kv_pos) / bw)


def test_llama2_7b_shape_has_llama2_7b_parameters():
    """The --device cuda model: Llama-2-7B's layers (6.48B without embeddings) over the tiny tokenizer's vocabulary."""
    import torch

    from bft.bench.device import Counted, llama_config, random_llama
    from bft.models.registry import load_tokenizer

    tok = load_tokenizer("tiny")
    model = random_llama(llama_config("llama2_7b", tok), torch.device("meta"))
    counted = Counted.of(model)
    assert counted.body == 6_476_271_616 and counted.head == 4096 * len(tok)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config.vocab_size == len(tok) and not model.config.tie_word_embeddings


@pytest.mark.slow  # a small random Llama through generation, logprob scoring and train_sft (LoRA and full) on CPU
def test_device_bench_runs_every_figure_on_the_cpu_at_a_small_shape():
    """``bft.bench.device.run_device`` is device-agnostic: the CUDA bench's code, at a small shape, in float32."""
    import torch

    from bft.bench.device import render, run_device

    report = run_device(
        "cpu", shape="small", n_prompts=3, new_tokens=4, sft_steps=1, sft_seq_len=256, corpus=None,
        matmul_size=128, copy_bytes=1 << 20, dtype=torch.float32, ceiling_seconds=0.1,
    )  # fmt: skip
    assert report["ceilings"]["matmul_flops"] > 0 and report["ceilings"]["copy_bytes_per_s"] > 0
    assert report["real_documents"].startswith("synthetic")
    for g in report["generation"].values():
        assert g["new_tokens"] == g["prompts"] * g["new_each"] and g["decode_steps"] > 0
        assert g["roofline_fraction"] > 0 and g["compute_fraction"] > 0 and g["roofline_seconds"] > 0
    assert report["curation"]["logprob_real"]["pairs_per_s"] > 0
    for method in ("lora", "full"):
        assert report["sft"][method].get("tokens_per_s", 0) > 0, report["sft"][method]
    Console = __import__("rich.console", fromlist=["Console"]).Console
    Console(width=200, record=True).print(render(report))
