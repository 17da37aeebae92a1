"""``bft-bench``: one process, one table. Generation, curation, SFT and matmul throughput vs plain baselines.

Example: ``bft-bench --quick --out bench.json``. FLOP conventions: see :mod:`bft.bench.measure`.
``bft-bench --device cuda``: the same stages on a GPU at Llama-2-7B shape with random weights, against the
device's own measured ceilings (:mod:`bft.bench.device`). ``bft-bench --served URL``: generation through a server
against the in-process backend (:mod:`bft.bench.served`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from bft.bench import measure
from bft.bench.workload import DEFAULT_CORPUS
from bft.models.registry import cpu_has_bf16
from bft.pipeline.memory import peak_rss_mb


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bft-bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2_135m", help="registry name, folder or hub id")
    p.add_argument("--prompts", type=int, default=None, help="generation prompts (default 128, quick 64)")
    p.add_argument(
        "--new-tokens", type=int, default=None, help="new tokens per augment prompt, twice per answer prompt (default 64, quick 32)"
    )
    p.add_argument("--pairs", type=int, default=None, help="curation pairs rated by generation (default 16, quick 8)")
    p.add_argument(
        "--logprob-pairs", type=int, default=None, help="curation pairs scored by logprob, each kind (default 64, quick 32)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="batch size of the bft hf backend")
    p.add_argument("--sft-steps", type=int, default=None, help="SFT steps, the first untimed (default 10, quick 3)")
    p.add_argument(
        "--max-batch-tokens", type=int, default=32768, help="hf backend token budget per batch (conf/generation/hf default)"
    )
    p.add_argument(
        "--corpus",
        default=str(DEFAULT_CORPUS),
        help="JSONL whose 600-3,000 character documents give the real workload; '' or a missing file: synthetic "
        "documents with the shipped token lengths of such a corpus",
    )
    p.add_argument(
        "--roofline-seconds",
        type=float,
        default=None,
        help="how long each roofline measurement runs (peak matmul per dtype, and copy bandwidth with --device): "
        "default 2 on the CPU and with --served (at the start and at the end), 1 with --device",
    )
    p.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--quick", action="store_true", help="fewer prompts, pairs and steps (about two minutes)")
    p.add_argument("--skip-sft", action="store_true")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu (this CPU bench, default), or cuda / cuda:N: a random Llama of --shape on that GPU (bft.bench.device)",
    )
    p.add_argument("--shape", default="llama2_7b", choices=["llama2_7b", "small"], help="model shape for --device cuda")
    p.add_argument(
        "--served",
        default=None,
        metavar="URL",
        help="an OpenAI-compatible server's base URL serving --model: the served path against the in-process hf "
        "backend on the same real documents (bft.bench.served); --prompts (default 32) and --new-tokens (default 32)",
    )
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    q = args.quick
    n_prompts = args.prompts or (64 if q else 128)
    new_tokens = args.new_tokens or (32 if q else 64)
    steps = args.sft_steps or (3 if q else 10)
    report: dict = {
        "model": args.model,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "loadavg_start": os.getloadavg(),
        },
        "flop_conventions": {
            "generation": "2*params/token",
            "lora_training": "4*params/token (no base weight grads)",
            "full_training": "6*params/token",
        },
    }
    t0 = time.perf_counter()
    roofline_seconds = 2.0 if args.roofline_seconds is None else args.roofline_seconds
    start_mm = _matmul_now(roofline_seconds)
    corpus = Path(args.corpus) if args.corpus else None
    gen = measure.generation(
        args.model, n_prompts, new_tokens, args.batch_size, 16 if q else 32, max_batch_tokens=args.max_batch_tokens, corpus=corpus
    )
    backend, plain = gen.pop("_backend"), gen.pop("_plain")
    n_pairs, n_logprob = args.pairs or (8 if q else 16), args.logprob_pairs or (32 if q else 64)
    cur = measure.curation(backend, n_pairs=n_pairs, n_logprob=n_logprob, plain=plain, corpus=corpus)
    del backend, plain
    if not args.skip_sft:
        report["sft"] = {
            "bft": measure.sft_bft(args.model, steps, compile=False),
            "bft_compiled": measure.sft_bft(args.model, steps, compile=True),
            "plain_fp32_lora": measure.sft_plain(args.model, steps),
        }
    end_mm = _matmul_now(roofline_seconds)
    # this shared machine's speed drifts: the roofline is the mean of the peaks measured before and after
    report["matmul"] = {key: _mean(start_mm[key], end_mm[key]) for key in start_mm} | {"start": start_mm, "end": end_mm}
    peak = report["matmul"]["bf16_flops"] if gen["dtype"] == "bfloat16" else report["matmul"]["fp32_flops"]
    for w in gen["workloads"].values():
        w["speedup_ceiling"] = speedup_ceiling(w, peak, gen["params"])
    report["generation"] = gen
    # logprob at 100% of the peak on the tokens it must run, over generate as measured: the ratio's ceiling
    best_logprob = peak / (measure.GEN_FLOPS_PER_PARAM * gen["params"] * cur["logprob"]["tokens_run_per_pair"])
    cur["logprob_vs_generate_ceiling"] = best_logprob / cur["generate"]["pairs_per_s"]
    for mode in ("logprob", "logprob_real"):
        cur[mode]["flops"] = cur[mode]["tokens_run_per_s"] * measure.GEN_FLOPS_PER_PARAM * gen["params"]
    report["curation"] = cur
    report["peak_rss_mb"] = peak_rss_mb()
    report["seconds"] = time.perf_counter() - t0
    report["machine"]["loadavg_end"] = os.getloadavg()
    return report


def _matmul_now(seconds: float) -> dict[str, float | None]:
    """Peak matmul FLOP/s now, each dtype measured for ``seconds``. bf16 only where the CPU computes it natively:
    elsewhere it is emulated (0.3 GFLOP/s on an AVX2-only machine, a minute per 2048^3 product), the backend runs
    float32, and so does its roofline."""
    bf16 = measure.matmul_flops(torch.bfloat16, seconds=seconds) if cpu_has_bf16() else None
    return {"fp32_flops": measure.matmul_flops(torch.float32, seconds=seconds), "bf16_flops": bf16}


def _mean(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (a + b) / 2


def speedup_ceiling(workload: dict, peak_flops: float, params: int) -> float:
    """The speedup over the baseline of a backend that ran every prompt and new token at ``peak_flops``."""
    best_new_tokens_per_s = peak_flops / (measure.GEN_FLOPS_PER_PARAM * params * workload["processed_tokens_per_new_token"])
    return best_new_tokens_per_s / workload["baseline_fp32_b16_tokens_per_s"]


def _fmt(x: float) -> str:
    return f"{x:,.1f}" if x < 1000 else f"{x:,.0f}"


def render(report: dict) -> Table:
    mm, gen, params = report["matmul"], report["generation"], report["generation"]["params"]
    peak = mm["bf16_flops"] if gen["dtype"] == "bfloat16" else mm["fp32_flops"]
    t = Table(title=f"bft-bench: {report['model']} ({params / 1e6:.0f}M params), {report['machine']['cpu_count']} CPUs")
    for col in ("measure", "value", "baseline", "ratio", "% roofline"):
        t.add_column(col, justify="left" if col == "measure" else "right")
    for dtype in ("fp32", "bf16"):
        key = f"{dtype}_flops"
        if mm[key] is None:
            t.add_row(f"matmul 2048^3 {dtype}: not native on this CPU (float32 roofline)", "", "", "", "")
            continue
        drift = f"{mm['start'][key] / 1e9:.0f} before, {mm['end'][key] / 1e9:.0f} after"
        t.add_row(f"matmul 2048^3 {dtype} GFLOP/s (mean of {drift})", _fmt(mm[key] / 1e9), "", "", "")
    for name, w in gen["workloads"].items():
        t.add_row(
            f"generation {name}: new tok/s ({gen['dtype']}, b{gen['batch_size']}, ~{w['mean_prompt_tokens']:.0f} prompt tok, "
            f"{w['new_tokens_each']} new) vs fp32 generate b16",
            _fmt(w["bft_tokens_per_s"]),
            _fmt(w["baseline_fp32_b16_tokens_per_s"]),
            f"{w['speedup']:.1f}x (max {w['speedup_ceiling']:.1f}x)",
            f"{100 * w['bft_flops'] / peak:.0f}% new, {100 * w['bft_flops_incl_prompt'] / peak:.0f}% all tok "
            f"(base {100 * w['baseline_flops_incl_prompt'] / mm['fp32_flops']:.0f}% fp32); padding: "
            f"{100 * w['prefill_padding_fraction']:.0f}% prefill, {100 * w['decode_kv_padding_fraction']:.0f}% decode KV",
        )
    cur = report["curation"]
    if "generate_plain_fp32" in cur:
        c = cur["generate_plain_fp32"]
        t.add_row(
            f"curation generate pairs/s, plain fp32 model.generate b16 ({c['pairs']} pairs, parsed {100 * c['parsed']:.0f}%)",
            f"{c['pairs_per_s']:.2f}",
            "",
            f"{c['pairs_per_s'] / cur['generate']['pairs_per_s']:.1f}x",
            "",
        )
    for mode in ("generate", "generate_n", "logprob", "logprob_real"):
        c = cur[mode]
        extra = f"parsed {100 * c['parsed']:.0f}%" if "parsed" in c else f"E(score) {c['mean_expected_score']:.2f}"
        ratio = f"{c['pairs_per_s'] / cur['generate']['pairs_per_s']:.1f}x" if mode != "generate" else "1.0x"
        roof = ""
        if mode.startswith("logprob"):
            ratio += f" (max {cur['logprob_vs_generate_ceiling']:.1f}x)" if mode == "logprob" else ""
            roof = f"{100 * c['flops'] / peak:.0f}% ({c['tokens_run_per_pair']:.0f} tok run/pair)"
        label = f"curation {mode} pairs/s ({c['pairs']} pairs, {extra}"
        label += f", ~{c['tokens_run_per_pair']:.0f} tok run/pair)" if mode == "logprob_real" else ")"
        t.add_row(label, f"{c['pairs_per_s']:.2f}", "", ratio, roof)
    if "logprob_vs_generate_plain_fp32" in cur:
        ratio = f"{cur['logprob_vs_generate_plain_fp32']:.1f}x"
        t.add_row("curation logprob vs generate through plain fp32 model.generate", "", "", ratio, "")
    sft = report.get("sft")
    if sft:
        plain = sft["plain_fp32_lora"]["tokens_per_s"]
        lora_flops = measure.LORA_FLOPS_PER_PARAM * params
        for key, label in (("bft", "eager, short runs"), ("bft_compiled", "compiled, long runs")):
            b = sft.get(key)
            if b is None:
                continue
            if "skipped" in b:
                t.add_row(f"SFT train tok/s bft.sft {label} (LoRA r16, 4x512)", "skipped", _fmt(plain), "", b["skipped"][:40])
                continue
            peak_sft = mm["bf16_flops"] if b["precision"].startswith("bf16") else mm["fp32_flops"]
            t.add_row(
                f"SFT train tok/s bft.sft {label} ({b['precision']}) vs plain fp32 LoRA loop (4x512)",
                _fmt(b["tokens_per_s"]),
                _fmt(plain),
                f"{b['tokens_per_s'] / plain:.1f}x",
                f"{100 * b['tokens_per_s'] * lora_flops / peak_sft:.0f}% (base {100 * plain * lora_flops / mm['fp32_flops']:.0f}%)",
            )
    t.add_row("peak RSS MB", _fmt(report["peak_rss_mb"]), "", "", "")
    t.add_row(
        "bench seconds / loadavg (start, end)",
        _fmt(report["seconds"]),
        f"{report['machine']['loadavg_start'][0]:.1f}, {report['machine']['loadavg_end'][0]:.1f}",
        "",
        "",
    )
    t.caption = (
        f"*_real: documents of 600-3,000 characters from {gen['real_documents']}; batches of at most "
        f"{gen['max_batch_tokens']} tokens. "
        "FLOPs/token: generation 2*params, LoRA training 4*params (no frozen-weight grads), full FT 6*params. "
        "Generation roofline: 'new' counts generated tokens only, 'all tok' also the prompt tokens the model ran; "
        "max: the speedup at 100% of the peak on all tokens (logprob: on the tokens it runs, vs generate as measured). "
        "The peak is bf16's where the CPU computes bf16 natively, else float32's (the backend then runs float32)"
    )
    return t


def run_on_device(args: argparse.Namespace) -> dict:
    from bft.bench.device import run_device

    q = args.quick
    ceiling = {} if args.roofline_seconds is None else {"ceiling_seconds": args.roofline_seconds}
    return run_device(
        args.device,
        shape=args.shape,
        n_prompts=args.prompts or (64 if q else 256),
        new_tokens=args.new_tokens or (32 if q else 64),
        sft_steps=args.sft_steps or (3 if q else 6),
        skip_sft=args.skip_sft,
        corpus=Path(args.corpus) if args.corpus else None,
        **ceiling,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device != "cpu":
        import sys

        from bft.config.machine import resolve_device
        from bft.config.validate import ConfigError

        try:
            args.device = resolve_device(args.device, key="--device")
        except ConfigError as err:
            print(f"bft-bench: error: {err}", file=sys.stderr)
            return 2
    if args.served:
        from bft.bench.served import compare
        from bft.bench.served import render as render_served

        corpus = Path(args.corpus) if args.corpus else None
        seconds = {} if args.roofline_seconds is None else {"roofline_seconds": args.roofline_seconds}
        report = compare(args.served, args.model, args.prompts or 32, args.new_tokens or 32, corpus, **seconds)
        Console(width=200).print(render_served(report))
    elif args.device != "cpu":
        from bft.bench.device import render as render_device

        report = run_on_device(args)
        Console(width=200).print(render_device(report))
    else:
        report = run(args)
        Console(width=200).print(render(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
