"""Self-curation scoring: the seed model rates (instruction, document) pairs on the papers' 1-5 rubric.

Modes (``curation.scoring``):
- ``generate``: reasoning then ``Score: N``, parsed by :func:`bft.parsers.parse_score`; unparsed ratings stay
  ``None`` and are counted, never defaulted. A rating cut at ``max_new_tokens`` (no end-of-turn token) is
  unfinished: no score, counted as ``judge_unfinished`` (1) on its record.
- ``logprob``: the rubric asks for the score alone, the assistant turn is prefilled with ``Score: `` and the
  score is the expected value of the next-token distribution over "1".."5" (one forward pass, no sampling).
- ``generate_n``: ``n_samples`` sampled ratings, the mean of those that parse (unfinished ones do not;
  ``judge_unfinished`` counts them).
"""

from __future__ import annotations

import math
from typing import Any

from bft.config.schema import CurationConfig
from bft.generation.base import GenerationBackend, Sampling
from bft.parsers import parse_score
from bft.prompts import SCORE_PREFILL, rating_prompt, render_chat

SCORE_TOKENS = ["1", "2", "3", "4", "5"]
Record = dict[str, Any]


def expected_score(logprobs: list[float]) -> tuple[float, float, list[float]]:
    """Normalise log-probabilities of "1".."5" into (expected score, confidence = max prob, probs)."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    probs = [w / total for w in weights]
    expectation = sum((i + 1) * p for i, p in enumerate(probs))
    return expectation, max(probs), probs


def score_pairs(pairs: list[Record], backend: GenerationBackend, tokenizer, cfg: CurationConfig, seed: int) -> list[Record]:
    """Return one scored record per input pair (same order), with the raw judge text kept beside the score."""
    score_only = cfg.scoring == "logprob"
    prefix = SCORE_PREFILL if score_only else ""
    prompts = [
        render_chat(tokenizer, rating_prompt(p["instruction"], p["text"], score_only=score_only), assistant_prefix=prefix)[0]
        for p in pairs
    ]
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    scored: list[Record] = []
    if cfg.scoring == "logprob":
        for pair, logprobs in zip(pairs, backend.next_token_logprobs(prompts, SCORE_TOKENS), strict=True):
            score, confidence, probs = expected_score(logprobs)
            scored.append({**pair, "score": score, "confidence": confidence, "judge_raw": {"probs": probs}})
    elif cfg.scoring == "generate":
        for pair, completion in zip(pairs, backend.generate(prompts, sampling, seed), strict=True):
            score = parse_score(completion.text, completion.finished)
            scored.append({**pair, "score": score, "judge_raw": completion.text, "judge_unfinished": int(not completion.finished)})
    elif cfg.scoring == "generate_n":
        runs = [backend.generate(prompts, sampling, seed * 1000 + k) for k in range(cfg.n_samples)]
        for i, pair in enumerate(pairs):
            texts = [run[i].text for run in runs]
            parsed = [s for s in (parse_score(run[i].text, run[i].finished) for run in runs) if s is not None]
            score = sum(parsed) / len(parsed) if parsed else None
            unfinished = sum(not run[i].finished for run in runs)
            scored.append({**pair, "score": score, "n_parsed": len(parsed), "judge_raw": texts, "judge_unfinished": unfinished})
    else:
        raise ValueError(f"curation.scoring: unknown mode '{cfg.scoring}' (generate | logprob | generate_n)")
    return scored
