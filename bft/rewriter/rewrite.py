"""The back-and-forth step: an aligned model rewrites each kept document into an answer to its instruction.

``mode=rewrite`` uses BFT's rewriting prompt (answer parsed from ``[RES]...[/RES]``); ``mode=distill`` gives the
instruction alone to the aligned model (the distillation baseline). The raw completion is kept for provenance.
"""

from __future__ import annotations

from typing import Any

from bft.config.schema import RewriterConfig
from bft.generation.base import GenerationBackend, Sampling
from bft.parsers import parse_rewrite
from bft.prompts import render_chat, rewrite_prompt

Record = dict[str, Any]


def rewrite_pairs(
    pairs: list[Record], backend: GenerationBackend, tokenizer, cfg: RewriterConfig, seed: int, model_name: str
) -> list[Record]:
    """One record per input pair with ``output`` set, or ``output=None`` when the rewrite did not parse."""
    if cfg.mode == "rewrite":
        users = [rewrite_prompt(p["instruction"], p["text"]) for p in pairs]
    elif cfg.mode == "distill":
        users = [p["instruction"] for p in pairs]
    else:
        raise ValueError(f"rewriter.mode: unknown mode '{cfg.mode}' (rewrite | distill)")
    prefix = "[RES]" if cfg.mode == "rewrite" and cfg.prefill_res_tag else ""
    prompts = [render_chat(tokenizer, user, assistant_prefix=prefix)[0] for user in users]
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    results: list[Record] = []
    for pair, completion in zip(pairs, backend.generate(prompts, sampling, seed), strict=True):
        if cfg.mode == "distill":
            output = completion.text.strip() or None
        else:
            output = parse_rewrite(prefix + completion.text)
            if output is None and cfg.keep_unparsed:
                output = pair["text"]
        results.append({**pair, "output": output, "rewriter_raw": completion.text, "rewriter": model_name})
    return results
