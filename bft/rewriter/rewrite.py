"""The back-and-forth step: an aligned model rewrites each kept document into an answer to its instruction.

``mode=rewrite`` uses BFT's rewriting prompt (answer parsed from ``[RES]...[/RES]``; a rewrite counts only when it
is closed by ``[/RES]`` or its completion ended by itself, see :func:`bft.parsers.parse_rewrite_completion`);
``mode=distill`` gives the instruction alone to the aligned model (the distillation baseline). The raw completion
and how it ended (``rewrite_status``) are kept for provenance and counted by :func:`rewrite_counts`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bft.config.schema import RewriterConfig
from bft.generation.base import GenerationBackend, Sampling
from bft.parsers import PARSED, REWRITE_STATUSES, TRUNCATED, UNPARSED, parse_rewrite_completion
from bft.prompts import render_chat, rewrite_prompt

Record = dict[str, Any]


def rewrite_pairs(
    pairs: list[Record], backend: GenerationBackend, tokenizer, cfg: RewriterConfig, seed: int, model_name: str
) -> list[Record]:
    """One record per input pair with ``output`` set (``None`` when the rewrite is truncated or unparsed, unless
    ``keep_unparsed`` keeps the raw text) and ``rewrite_status`` (parsed | truncated | unparsed).

    In distill mode an answer cut at ``max_new_tokens`` is kept (BFT's distilled answers are plain completions) but
    its status says ``truncated``, so the accounting shows how many were cut.
    """
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
            status = UNPARSED if output is None else (PARSED if completion.finished else TRUNCATED)
        else:
            parsed = parse_rewrite_completion(prefix + completion.text, completion.finished)
            output, status = parsed.output, parsed.status
            if output is None and cfg.keep_unparsed:
                output = pair["text"]
        record = {**pair, "output": output, "rewriter_raw": completion.text, "rewriter": model_name}
        results.append(record | {"rewrite_status": status, "rewriter_finished": completion.finished})
    return results


def rewrite_counts(records: list[Record]) -> dict[str, int]:
    """How many rewrites parsed, were truncated at ``max_new_tokens`` or did not parse (all three keys; records
    without a ``rewrite_status``, e.g. ``rewriter=none``, are not counted)."""
    counts = Counter(r["rewrite_status"] for r in records if "rewrite_status" in r)
    return {status: counts.get(status, 0) for status in REWRITE_STATUSES}
