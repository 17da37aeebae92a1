"""``bft-bench --served URL``: the served path (bft.generation.served) against the in-process ``hf`` backend, in one
run, on the same real-document workload: back-translation prompts of real documents, greedy, the same length cap.

Reports records/s and new tokens/s of each, their ratio, the per-request overhead (median round trip of one-token
requests on a one-token prompt), and each path's fraction of this machine's float32 matmul roofline measured in the
same run (2 x params FLOPs per processed token: prompt and new tokens). A server on another machine makes the ratio
a statement about that machine; on this one they share the CPU.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from bft.bench import measure
from bft.bench.workload import real_documents
from bft.generation.base import Sampling
from bft.models.registry import load_model


def _path(backend, prompts: list[str], new_tokens: int) -> dict[str, float]:
    greedy = Sampling(do_sample=False, temperature=0.0, max_new_tokens=new_tokens)
    start = time.perf_counter()
    outs = backend.generate(prompts, greedy, seed=0)
    seconds = time.perf_counter() - start
    new = sum(o.new_tokens for o in outs)
    processed = sum(o.prompt_tokens for o in outs) + new
    return {
        "records_per_s": len(outs) / seconds,
        "new_tokens_per_s": new / seconds,
        "processed_tokens_per_s": processed / seconds,
        "seconds": seconds,
        "new_tokens": new,
        "texts": [o.text for o in outs],
    }


def _overhead(backend, n: int = 8) -> float:
    """Median seconds of a one-token request on a one-token prompt: the server's cost per request."""
    one = Sampling(do_sample=False, temperature=0.0, max_new_tokens=1)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        backend.generate(["Hi"], one, seed=0)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(
    url: str,
    model: str,
    n_prompts: int,
    new_tokens: int,
    corpus: Path | None,
    concurrency: int = 64,
    roofline_seconds: float = 2.0,
) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from bft.config.schema import GenerationConfig, ServerConfig
    from bft.generation.factory import make_backend
    from bft.prompts import backtranslation_prompt, render_chat

    server = ServerConfig(url=url, max_concurrent=concurrency)
    served = make_backend(OmegaConf.structured(GenerationConfig(backend="served", server=server)), model)
    local = make_backend(OmegaConf.structured(GenerationConfig(backend="hf", device="cpu")), model)
    docs, source = real_documents(n_prompts, local.tokenizer, corpus)
    prompts = [render_chat(local.tokenizer, backtranslation_prompt(d))[0] for d in docs]
    peak_start = measure.matmul_flops(torch.float32, seconds=roofline_seconds)
    try:
        _path(served, prompts[:2], 2)  # the server loads the model on its first request
        _path(local, prompts[:2], 2)  # one-time kernel compilation
        paths = {"served": _path(served, prompts, new_tokens), "hf": _path(local, prompts, new_tokens)}
        overhead = _overhead(served)
    finally:
        served.close()
    peak = (peak_start + measure.matmul_flops(torch.float32, seconds=roofline_seconds)) / 2
    params = measure.n_params(load_model(model, dtype="float32").model)  # the backend packs its weights as buffers
    for p in paths.values():
        p["roofline_fraction"] = p["processed_tokens_per_s"] * measure.GEN_FLOPS_PER_PARAM * params / peak
    same = sum(a == b for a, b in zip(paths["served"].pop("texts"), paths["hf"].pop("texts"), strict=True))
    return {
        "url": url,
        "model": model,
        "documents": source,
        "prompts": len(prompts),
        "max_new_tokens": new_tokens,
        "concurrency": concurrency,
        "fp32_matmul_flops": peak,
        "params": params,
        "paths": paths,
        "served_over_hf_records": paths["served"]["records_per_s"] / paths["hf"]["records_per_s"],
        "served_over_hf_new_tokens": paths["served"]["new_tokens_per_s"] / paths["hf"]["new_tokens_per_s"],
        "request_overhead_s": overhead,
        "identical_outputs": same,
    }


def render(report: dict[str, Any]) -> Table:
    t = Table(title=f"bft-bench --served {report['url']}: {report['model']}, {report['prompts']} real documents, greedy")
    for col in ("path", "records/s", "new tok/s", "% fp32 roofline", "seconds"):
        t.add_column(col, justify="left" if col == "path" else "right")
    for name, p in report["paths"].items():
        roof = f"{100 * p['roofline_fraction']:.1f}"
        t.add_row(name, f"{p['records_per_s']:.2f}", f"{p['new_tokens_per_s']:.1f}", roof, f"{p['seconds']:.1f}")
    t.add_row("served / hf", f"{report['served_over_hf_records']:.2f}x", f"{report['served_over_hf_new_tokens']:.2f}x", "", "")
    t.caption = (
        f"per-request overhead {1000 * report['request_overhead_s']:.0f} ms (median one-token round trip); "
        f"{report['identical_outputs']}/{report['prompts']} outputs identical"
    )
    return t
