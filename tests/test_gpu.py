"""The GPU lane: ``make test-gpu`` (``pytest -m gpu``). Every test here needs CUDA and is skipped without it
(``tests/conftest.py``), so ``make test`` on a CPU machine collects and skips them.

What runs on a GPU: ``train_sft`` under every strategy x precision on the tiny model; a paper experiment under
``debug=paper_smoke`` with its own strategy (FSDP, bf16-mixed) through the CLI; ``bft debug=smoke trainer=gpu``
with every generation stage on the GPU; greedy generation on CUDA against the CPU's; the engine's batches at what
a memory plan allows, within it; ``bft-bench --device cuda`` at a small shape.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
GENERATING = ("augment", "curate", "rewrite", "eval_outputs", "base_outputs", "evaluate")


@pytest.fixture(autouse=True)
def _free_the_gpu():
    """Each test starts with the GPU as the previous one found it: process group closed, cached blocks freed."""
    yield
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    gc.collect()
    torch.cuda.empty_cache()


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline", **extra}


def _bft(args: list[str], cwd: Path, timeout: int = 900, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "bft.cli", *args, f"hydra.run.dir={cwd / 'run'}"],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"bft {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def _manifests(artifacts: Path) -> dict[str, dict]:
    """stage folder name -> manifest of every published artifact under ``artifacts``."""
    return {path.parent.parent.name: json.loads(path.read_text()) for path in sorted(artifacts.glob("*/*/manifest.json"))}


def _assert_generation_on_the_gpu(artifacts: Path) -> None:
    manifests = _manifests(artifacts)
    generating = {name: m for name, m in manifests.items() if name.startswith(GENERATING)}
    assert {"augment", "rewrite", "eval_outputs", "evaluate"} <= set(generating), sorted(manifests)
    for name, manifest in generating.items():
        assert manifest["metrics"]["device"] == "cuda:0", (name, manifest["metrics"].get("device"))


# ------------------------------------------------------------------ training: every strategy x precision


def _sft_examples(n: int = 8) -> list[dict]:
    from bft.models.registry import load_tokenizer
    from bft.prompts import render_chat

    tok = load_tokenizer("tiny")
    return [
        {"prompt": render_chat(tok, f"What is item {i} of the list?")[0], "completion": f"Item {i} is a river." + tok.eos_token}
        for i in range(n)
    ]


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
@pytest.mark.parametrize("strategy", ["auto", "ddp", "fsdp", "deepspeed_stage_3"])  # auto: conf/trainer/gpu.yaml
def test_train_sft_every_strategy_and_precision(strategy, precision, tmp_path):
    """Two optimizer steps on one GPU; sharded strategies fully fine-tune (their consolidated export), the others
    train LoRA; the result loads on the GPU with finite weights."""
    import torch

    from bft.config.schema import PeftConfig, SFTStageConfig, TrainerConfig
    from bft.models.registry import load_model
    from bft.sft.train import train_sft

    if strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (pip install 'bft[deepspeed]')")
    sharded = strategy in ("fsdp", "deepspeed_stage_3")
    stage = SFTStageConfig(max_steps=2, batch_size=4, micro_batch_size=2, max_seq_len=256, warmup_ratio=0.0)
    trainer = TrainerConfig(
        accelerator="gpu",
        devices=1,
        strategy=strategy,
        precision=precision,
        enable_progress_bar=False,
        checkpoint_every_n_steps=0,
    )
    peft = PeftConfig(method="full" if sharded else "lora")
    result = train_sft(_sft_examples(), "tiny", tmp_path / "run", stage, peft, trainer, seed=0)
    assert result.metrics["steps"] == 2 and math.isfinite(result.metrics["train_loss"])
    assert result.is_adapter is not sharded
    if result.is_adapter:
        loaded = load_model("tiny", adapter=result.model_dir, device="cuda:0")
    else:
        loaded = load_model(result.model_dir, device="cuda:0")
    assert all(p.device.type == "cuda" and torch.isfinite(p).all() for p in loaded.model.parameters())


# ------------------------------------------------------------------ whole runs through the CLI


def test_debug_smoke_on_a_gpu_generates_on_the_gpu(tmp_path):
    """``BFT_ARTIFACTS=... bft debug=smoke trainer=gpu``: every generation stage (and the local judge) on cuda:0,
    the artifacts where BFT_ARTIFACTS says."""
    artifacts = tmp_path / "store"
    proc = _bft(["debug=smoke", "trainer=gpu"], tmp_path, BFT_ARTIFACTS=str(artifacts))
    _assert_generation_on_the_gpu(artifacts)
    assert "on cuda:0" in proc.stdout + proc.stderr
    assert not (tmp_path / "artifacts").exists()


def test_paper_experiment_on_one_gpu_with_its_own_strategy(tmp_path):
    """``backandforth_paper`` under ``debug=paper_smoke`` on one GPU with FSDP and bf16-mixed (the experiment's
    trainer), through the CLI, offline, on a random model: the overrides conf/debug/paper_smoke.yaml documents."""
    from test_paper_smoke import write_corpus, write_oasst1

    from bft.models.registry import resolve_model_path

    files = tmp_path / "hub_format"
    files.mkdir()
    artifacts = tmp_path / "artifacts"
    _bft(
        [
            "+experiment=backandforth_paper",
            "debug=paper_smoke",
            "trainer.accelerator=gpu",
            "trainer.devices=1",
            "trainer.strategy=fsdp",
            "trainer.precision=bf16-mixed",
            f"seed.hub_dataset={write_oasst1(files / 'oasst1_train.jsonl')}",
            f"corpus.source={write_corpus(files / 'dolma.jsonl', 'dolma')}",
            f"corpus.tokenizer={resolve_model_path('tiny')}",
            "eval.annotator=local",
            "curation.scoring=logprob",
            "curation.threshold=null",
            "curation.top_fraction=0.5",
            "rewriter.keep_unparsed=true",
            f"run.artifacts_dir={artifacts}",
        ],
        tmp_path,
    )
    _assert_generation_on_the_gpu(artifacts)
    manifests = _manifests(artifacts)
    assert manifests["final_model"]["is_adapter"] is False  # full fine-tuning, exported from FSDP's sharded checkpoint
    summary = json.loads(next((tmp_path / "run").rglob("summary.json")).read_text())
    assert 0.0 <= summary["win_rate"] <= 100.0


# ------------------------------------------------------------------ generation on CUDA


def _greedy_ids(backend, ids: list[list[int]], new_tokens: int) -> list[list[int]]:
    """Greedy token ids of each row (one batch, no shared prefix), through the backend's own decode loop."""
    import torch

    from bft.generation.base import Sampling

    backend._plan_call([len(x) for x in ids], new_tokens)
    with torch.inference_mode(), backend._attention():
        rows = backend._decode(ids, [torch.Generator() for _ in ids], Sampling(temperature=0.0, max_new_tokens=new_tokens), None, 0)
    return [tokens for tokens, _ in rows]


def test_greedy_generation_on_cuda_matches_the_cpu():
    """float32 on both: the same tokens, except where the CPU's own logits make a near-tie (top two within 1e-3)."""
    import torch

    from bft.generation.hf import HFBackend
    from bft.models.registry import load_model
    from bft.prompts import render_chat

    cpu = HFBackend.from_name("tiny", dtype="float32", device="cpu", batch_size=8)
    gpu = HFBackend.from_name("tiny", dtype="float32", device="cuda")
    assert gpu.device.type == "cuda" and gpu.packed_linear_layers == gpu.fused_modules == 0 and not gpu.decode_attention
    prompts = [render_chat(cpu.tokenizer, f"Write a short note about topic {i}, please.")[0] for i in range(8)]
    ids = cpu._tokenize(prompts)
    on_cpu, on_gpu = _greedy_ids(cpu, ids, 24), _greedy_ids(gpu, ids, 24)
    plain = load_model("tiny", dtype="float32").model
    for prompt, a, b in zip(ids, on_cpu, on_gpu, strict=True):
        k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        if k is None:
            assert len(a) == len(b) or (a and a[-1] in cpu.stop_ids) or (b and b[-1] in gpu.stop_ids)
            continue
        with torch.inference_mode():
            logits = plain(input_ids=torch.tensor([prompt + a[:k]])).logits[0, -1]
        top = logits.topk(2)
        assert {a[k], b[k]} == set(top.indices.tolist()) and float(top.values[0] - top.values[1]) < 1e-3, (k, a[k], b[k])
    # the public path too: texts and counts through generate() on the GPU, sampled and greedy
    from bft.generation.base import Sampling

    outs = gpu.generate(prompts, Sampling(temperature=0.7, top_p=0.9, max_new_tokens=16), seed=3)
    again = gpu.generate(prompts, Sampling(temperature=0.7, top_p=0.9, max_new_tokens=16), seed=3)
    assert [o.text for o in outs] == [o.text for o in again] and all(o.new_tokens > 0 for o in outs)
    assert gpu.stats()["decode_steps"] > 0


def test_engine_fills_the_memory_plan_and_stays_within_it(monkeypatch):
    """With a memory plan of 3 GiB free (a mid-size random Llama in bf16), the batches the plan makes run without
    running out of memory and take at most what the plan allows, and a good part of it."""
    import torch

    from bft.bench.device import random_llama
    from bft.bench.workload import real_documents
    from bft.generation import hf
    from bft.generation.base import Sampling
    from bft.generation.gpu_memory import HEADROOM, RESERVE_BYTES
    from bft.models.registry import load_tokenizer
    from bft.prompts import backtranslation_prompt, render_chat

    plan = 3 << 30
    monkeypatch.setattr(hf, "free_cuda_bytes", lambda device: plan)
    tok = load_tokenizer("tiny")
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
        num_key_value_heads=16, max_position_embeddings=4096, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    backend = hf.HFBackend(random_llama(config, torch.device("cuda:0")), tok)
    docs, _ = real_documents(256, tok, None)
    prompts = [render_chat(tok, backtranslation_prompt(d))[0] for d in docs]
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    outs = backend.generate(prompts, Sampling(temperature=0.0, max_new_tokens=64, min_new_tokens=64), seed=0)
    torch.cuda.synchronize()
    used = torch.cuda.max_memory_allocated() - base
    usable = plan * HEADROOM - RESERVE_BYTES
    assert all(o.new_tokens == 64 for o in outs)
    assert backend._limits.rows < len(prompts)  # the plan, not the prompt count, bounded the batches
    assert used <= usable, f"{used / 2**30:.2f} GiB used, the plan allowed {usable / 2**30:.2f}"
    assert used >= 0.3 * usable, f"{used / 2**30:.2f} GiB used of {usable / 2**30:.2f}: the plan is far too cautious"


# ------------------------------------------------------------------ bft-bench --device cuda


def test_bench_on_the_gpu_at_a_small_shape(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--device", "cuda", "--shape", "small", "--quick", "--prompts", "16", "--new-tokens", "8", "--sft-steps", "2"]
    proc = subprocess.run(
        [sys.executable, "-m", "bft.bench.cli", *args, "--corpus", "", "--out", str(out)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cuda:0" and report["ceilings"]["matmul_flops"] > 1e12
    assert report["ceilings"]["copy_bytes_per_s"] > 1e11
    for g in report["generation"].values():
        assert 0 < g["roofline_fraction"] <= 1.5 and g["new_tokens_per_s"] > 0
    assert report["curation"]["logprob_real"]["pairs_per_s"] > 0
    for method in ("lora", "full"):
        assert report["sft"][method].get("tokens_per_s", 0) > 0, report["sft"][method]
    assert "% of roofline" in proc.stdout
