"""``bft-bench --device cuda``: bft's generation, curation and SFT on an accelerator, each as a fraction of the
roofline this device measures for itself.

Nothing is downloaded: the model is a Llama of Llama-2-7B's shape (``--shape llama2_7b``: 32 layers, hidden 4,096,
MLP 11,008, 32 heads) with random weights initialised on the device in bfloat16, and the tiny registry model's
tokenizer (SmolLM2's, so the vocabulary is 49,152). Random weights give the real shapes and memory traffic; the
text they write is noise, so every generation is forced to its full length.

Ceilings, measured first: the bf16 matmul rate (an 8192^3 product) and the device copy bandwidth (a 2 GiB
``copy_``, bytes read + written). Each figure is then shown against them:

- generation (real document lengths, :func:`bft.bench.workload.real_documents`; and answer-shaped prompts): the
  time the roofline allows for the work the backend did over the time it took. Prefill is compute-bound (2 FLOPs
  per decoder-layer parameter per prompt token, and the LM head once per row, at the matmul rate); a decode step
  reads every weight once and each row's KV cache, so it takes at least max(its FLOPs at the matmul rate, (weight
  bytes + KV bytes read) at the copy bandwidth).
  Also shown: the FLOP rate on all tokens over the matmul rate (``compute``), as the CPU bench does;
- logprob curation (prefill only, compute-bound): its FLOPs over the matmul rate;
- SFT through ``bft.sft.train.train_sft`` (LoRA r=16 and full fine-tuning, bf16-mixed): 4·params (LoRA) and
  6·params (full) FLOPs per token over the matmul rate (params: the layers and the LM head, not the embedding).
  Full fine-tuning keeps float32 master weights and AdamW states: about 16 bytes a parameter (108 GB at 7B), which
  fits a 141 GB H200 and not an 80 GB GPU (reported as skipped, with the error, where it does not fit).

FLOP conventions: as :mod:`bft.bench.measure`'s, with the parameters counted where they work (:class:`Counted`).
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from bft.bench.workload import DEFAULT_CORPUS, pairs, real_documents
from bft.generation.base import Sampling
from bft.generation.gpu_memory import ModelShape

# Llama-2-7B's shape (meta-llama/Llama-2-7b-hf config.json), and a small one for smoke tests of this bench
SHAPES: dict[str, dict[str, int]] = {
    "llama2_7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
    },
    "small": {
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
    },
}
GEN_FLOPS_PER_PARAM, LORA_FLOPS_PER_PARAM, FULL_FLOPS_PER_PARAM = 2, 4, 6


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device, dtype: torch.dtype = torch.bfloat16, size: int = 8192, seconds: float = 1.0) -> float:
    """The matmul rate of ``device`` in ``dtype`` (a ``size``^3 product, repeated for about ``seconds``)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    synchronize(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(4):
            torch.mm(a, b)
        reps += 4
        synchronize(device)
    return 2 * size**3 * reps / (time.perf_counter() - start)


def copy_bandwidth(device: torch.device, nbytes: int = 2 << 30, seconds: float = 1.0) -> float:
    """Bytes per second a device-to-device ``copy_`` moves (each byte read once and written once)."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    synchronize(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        dst.copy_(src)
        reps += 1
        synchronize(device)
    return 2 * src.numel() * src.element_size() * reps / (time.perf_counter() - start)


def llama_config(shape: str, tokenizer):
    """A LlamaConfig of ``shape`` (:data:`SHAPES`) over ``tokenizer``'s vocabulary."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SHAPES[shape],
    )


def random_llama(config, device: torch.device, dtype: torch.dtype = torch.bfloat16):
    """A Llama of ``config`` with random weights, initialised on ``device`` in ``dtype`` (no host copy)."""
    from transformers import LlamaForCausalLM

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(0)
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


@dataclass(frozen=True)
class Counted:
    """The parameters that do matmul work, counted apart: ``body`` (decoder layers) runs for every token; ``head``
    (the LM head) for every decoded token but only one position per prefilled row (``logits_to_keep=1``). The
    input embedding is a lookup and counts for nothing (the CPU bench credits every parameter for every token;
    at a small shape the vocabulary is most of the parameters, so that would overstate the work several times)."""

    body: int
    head: int

    @classmethod
    def of(cls, model) -> Counted:
        head = model.get_output_embeddings().weight.numel()
        embed = model.get_input_embeddings().weight.numel()
        total = sum(p.numel() for p in model.parameters())
        return cls(body=total - head - embed, head=head)

    def prefill_flops(self, tokens: int, rows: int) -> float:
        return GEN_FLOPS_PER_PARAM * (self.body * tokens + self.head * rows)

    def decode_flops(self, tokens: int) -> float:
        return GEN_FLOPS_PER_PARAM * (self.body + self.head) * tokens


def decode_seconds_bound(
    counted: Counted, weight_bytes: int, kv_bytes: float, new_tokens: int, steps: int, peak: float, bw: float
) -> float:
    """The least time ``steps`` decode steps producing ``new_tokens`` tokens can take: each step reads every weight
    once and all steps ``kv_bytes`` of KV cache; each token costs 2·(body + head) FLOPs."""
    return max(counted.decode_flops(new_tokens) / peak, (steps * weight_bytes + kv_bytes) / bw)


def generation_figures(
    stats: dict, seconds: float, counted: Counted, weight_bytes: int, kv_per_position: int, peak: float, bw: float
) -> dict:
    """A generation run's rates and its fractions of the roofline, from the backend's counters (``stats``: the
    run's deltas of ``HFBackend.stats()``; ``weight_bytes``: what a decode step reads, the LM head included)."""
    prompt, new, rows = stats.get("prefill_tokens", 0), stats.get("new_tokens", 0), stats.get("sequences", 0)
    steps, kv = stats.get("decode_steps", 0), stats.get("decode_kv_needed", 0) * kv_per_position
    prefill_bound = counted.prefill_flops(prompt, rows) / peak
    decode_bound = decode_seconds_bound(counted, weight_bytes, kv, new, steps, peak, bw)
    return {
        "seconds": seconds,
        "prompt_tokens": prompt,
        "new_tokens": new,
        "decode_steps": steps,
        "new_tokens_per_s": new / seconds,
        "compute_fraction": (counted.prefill_flops(prompt, rows) + counted.decode_flops(new)) / seconds / peak,
        "roofline_seconds": prefill_bound + decode_bound,
        "roofline_fraction": (prefill_bound + decode_bound) / seconds,
    }


def _generation(
    backend, prompts: list[str], new_tokens: int, counted: Counted, weight_bytes: int, kv_pos: int, peak: float, bw: float
) -> dict:
    before = Counter(backend.stats())
    forced = Sampling(temperature=0.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    synchronize(backend.device)
    start = time.perf_counter()
    outs = backend.generate(prompts, forced, seed=0)
    synchronize(backend.device)
    seconds = time.perf_counter() - start
    stats = dict(Counter(backend.stats()) - before)
    figures = generation_figures(stats, seconds, counted, weight_bytes, kv_pos, peak, bw)
    figures.update(prompts=len(prompts), mean_prompt_tokens=sum(o.prompt_tokens for o in outs) / len(outs), new_each=new_tokens)
    figures["rows_per_batch"] = backend._limits.rows
    return figures


def _logprob(backend, data: list[tuple[str, str]], counted: Counted, peak: float) -> dict:
    from bft.prompts import SCORE_PREFILL, rating_prompt, render_chat

    tok = backend.tokenizer
    prompts = [render_chat(tok, rating_prompt(i, o, score_only=True), assistant_prefix=SCORE_PREFILL)[0] for i, o in data]
    ran = backend.stats().get("prefill_tokens", 0)
    synchronize(backend.device)
    start = time.perf_counter()
    backend.next_token_logprobs(prompts, ["1", "2", "3", "4", "5"])
    synchronize(backend.device)
    seconds = time.perf_counter() - start
    ran = backend.stats().get("prefill_tokens", 0) - ran
    return {
        "pairs": len(data),
        "pairs_per_s": len(data) / seconds,
        "tokens_run_per_s": ran / seconds,
        "compute_fraction": counted.prefill_flops(ran, len(data)) / seconds / peak,
    }


def _sft(folder: Path, device: torch.device, method: str, steps: int, seq_len: int, peak: float, counted: Counted) -> dict:
    """``train_sft`` as the pipeline runs it on one device (bf16-mixed, SDPA), LoRA r=16 or full fine-tuning."""
    from bft.bench.measure import _sft_examples
    from bft.config.schema import PeftConfig, SFTStageConfig, TrainerConfig
    from bft.sft.train import train_sft

    stage = SFTStageConfig(max_steps=steps, micro_batch_size=2, batch_size=4, max_seq_len=seq_len, warmup_ratio=0.0, dropout=0.0)
    trainer = TrainerConfig(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        precision="bf16-mixed",
        enable_progress_bar=False,
        checkpoint_every_n_steps=0,
        log_every_n_steps=1,
    )
    with tempfile.TemporaryDirectory() as out:
        try:
            result = train_sft(
                _sft_examples(str(folder), 4 * steps), str(folder), Path(out), stage, PeftConfig(method=method), trainer, seed=0
            )
        except Exception as err:  # noqa: BLE001 - out of memory (full fine-tuning on a small GPU) is a finding, not a crash
            return {"skipped": f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"}
        finally:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    per_param = LORA_FLOPS_PER_PARAM if method == "lora" else FULL_FLOPS_PER_PARAM
    tps = result.metrics["steady_tokens_per_s"] or result.metrics["tokens_per_s"]
    flops = per_param * (counted.body + counted.head) * tps  # training runs the LM head on every position
    return {"tokens_per_s": tps, "compute_fraction": flops / peak, "steps": steps, "precision": result.precision}


def run_device(
    device: str,
    shape: str = "llama2_7b",
    n_prompts: int = 256,
    new_tokens: int = 64,
    sft_steps: int = 6,
    sft_seq_len: int = 512,
    skip_sft: bool = False,
    corpus: Path | None = DEFAULT_CORPUS,
    matmul_size: int = 8192,
    copy_bytes: int = 2 << 30,
    dtype: torch.dtype = torch.bfloat16,
    ceiling_seconds: float = 1.0,
) -> dict:
    """Every figure of the device bench (see the module docstring), as one JSON-ready dict. ``dtype``: of the
    model, the matmul ceiling and the KV cache (bfloat16; the CPU test of this function runs float32 where the
    CPU has no bf16 units). ``ceiling_seconds``: how long each ceiling (matmul, copy) is measured."""
    from bft.generation.hf import HFBackend
    from bft.models.registry import load_tokenizer
    from bft.prompts import backtranslation_prompt, render_chat

    where = torch.device(device)
    t0 = time.perf_counter()
    report: dict = {"device": str(where), "shape": shape, "dtype": str(dtype).removeprefix("torch.")}
    if where.type == "cuda":
        report["device_name"] = torch.cuda.get_device_name(where)
        torch.cuda.reset_peak_memory_stats(where)
    peak = matmul_flops(where, dtype, size=matmul_size, seconds=ceiling_seconds)
    bw = copy_bandwidth(where, copy_bytes, seconds=ceiling_seconds)
    report["ceilings"] = {"matmul_flops": peak, "copy_bytes_per_s": bw}
    tok = load_tokenizer("tiny")
    config = llama_config(shape, tok)
    model = random_llama(config, where, dtype)
    params = sum(p.numel() for p in model.parameters())
    counted = Counted.of(model)
    weight_bytes = (counted.body + counted.head) * torch.finfo(dtype).bits // 8  # what a decode step reads
    kv_pos = ModelShape.from_config(config).kv_bytes_per_position(torch.finfo(dtype).bits // 8)
    report.update(
        params=params, body_params=counted.body, head_params=counted.head, weight_bytes=weight_bytes, kv_bytes_per_position=kv_pos
    )
    backend = HFBackend(model, tok)  # off CPU: batches sized from free memory; on CPU (tests): its defaults
    docs, source = real_documents(n_prompts, tok, corpus)
    report["real_documents"] = source
    real = [render_chat(tok, backtranslation_prompt(d))[0] for d in docs]
    answers = [render_chat(tok, instruction)[0] for instruction, _ in pairs(n_prompts)]
    backend.generate(real[:2], Sampling(temperature=0.0, max_new_tokens=2), seed=0)  # CUDA context, kernels, allocator
    report["generation"] = {
        "augment_real": _generation(backend, real, new_tokens, counted, weight_bytes, kv_pos, peak, bw),
        "answer": _generation(backend, answers, 2 * new_tokens, counted, weight_bytes, kv_pos, peak, bw),
    }
    report["curation"] = {
        "logprob_real": _logprob(backend, [(i, d) for (i, _), d in zip(pairs(len(docs)), docs, strict=True)], counted, peak)
    }
    del backend
    if not skip_sft:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / f"random-{shape}"
            model.save_pretrained(folder)
            tok.save_pretrained(folder)
            del model
            gc.collect()
            if where.type == "cuda":
                torch.cuda.empty_cache()
            report["sft"] = {m: _sft(folder, where, m, sft_steps, sft_seq_len, peak, counted) for m in ("lora", "full")}
    if where.type == "cuda":
        report["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(where) / 1e9
    report["seconds"] = time.perf_counter() - t0
    return report


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def render(report: dict):
    from rich.table import Table

    c = report["ceilings"]
    size = f"{report['params'] / 1e9:.2f}B params, {report['dtype']}"
    title = f"bft-bench --device {report['device']}: random Llama, {report['shape']} shape ({size})"
    if report.get("device_name"):
        title += f", {report['device_name']}"
    t = Table(title=title)
    for col in ("measure", "value", "% of roofline", "% of matmul peak"):
        t.add_column(col, justify="left" if col == "measure" else "right")
    t.add_row(f"ceiling: {report['dtype']} matmul TFLOP/s", f"{c['matmul_flops'] / 1e12:,.1f}", "", "")
    t.add_row("ceiling: device copy GB/s (read + write)", f"{c['copy_bytes_per_s'] / 1e9:,.0f}", "", "")
    for name, g in report["generation"].items():
        t.add_row(
            f"generation {name}: new tok/s (~{g['mean_prompt_tokens']:.0f} prompt tok, {g['new_each']} new, "
            f"{g['prompts']} prompts, <= {g['rows_per_batch']} rows/batch)",
            f"{g['new_tokens_per_s']:,.0f}",
            _pct(g["roofline_fraction"]),
            _pct(g["compute_fraction"]) + " all tok",
        )
    lp = report["curation"]["logprob_real"]
    t.add_row(
        f"curation logprob on real documents: pairs/s ({lp['pairs']} pairs)",
        f"{lp['pairs_per_s']:,.1f}",
        _pct(lp["compute_fraction"]),
        _pct(lp["compute_fraction"]),
    )
    for method, s in report.get("sft", {}).items():
        if "skipped" in s:
            t.add_row(f"SFT {method} (train_sft, bf16-mixed)", "skipped", "", s["skipped"][:60])
            continue
        t.add_row(
            f"SFT {method} (train_sft, bf16-mixed, 4x512): train tok/s",
            f"{s['tokens_per_s']:,.0f}",
            _pct(s["compute_fraction"]),
            _pct(s["compute_fraction"]),
        )
    if "peak_gpu_memory_gb" in report:
        t.add_row("peak GPU memory GB", f"{report['peak_gpu_memory_gb']:.1f}", "", "")
    t.add_row("bench seconds", f"{report['seconds']:.0f}", "", "")
    t.caption = (
        "roofline: generation = prefill at the matmul peak + decode steps at max(matmul peak, weights + KV read at the "
        "copy bandwidth), for the work the backend did; logprob and SFT are compute-bound (2 / 4 LoRA / 6 full "
        f"x params FLOPs per token). Documents: {report['real_documents']}"
    )
    return t
