"""Pair rating (the curate stage): a judge rates each (instruction, document) pair on the papers' 1-5 rubric.

Modes (``scoring``):
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
from dataclasses import dataclass
from typing import Any

from bft.generation.base import Completion, GenerationBackend
from bft.parsers import parse_score
from bft.prompts import SCORE_PREFILL, rating_prompt, render_chat
from bft.tasks.base import GenerationTask, Record, generate_once

SCORE_TOKENS = ["1", "2", "3", "4", "5"]
SCORINGS = ("generate", "logprob", "generate_n")


@dataclass(frozen=True)
class Settings:
    """The rating part of ``curation`` and the judge's artifact key."""

    scoring: str  # generate | logprob | generate_n
    n_samples: int  # ratings per pair for generate_n
    temperature: float
    top_p: float
    max_new_tokens: int
    judge_model: str  # recorded on each rated pair

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise ValueError(f"curation.scoring: unknown mode '{self.scoring}' ({' | '.join(SCORINGS)})")


def expected_score(logprobs: list[float]) -> tuple[float, float, list[float]]:
    """Normalise log-probabilities of "1".."5" into (expected score, confidence = max prob, probs)."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    probs = [w / total for w in weights]
    expectation = sum((i + 1) * p for i, p in enumerate(probs))
    return expectation, max(probs), probs


def render(record: Record, settings: Settings, tokenizer: Any) -> str:
    score_only = settings.scoring == "logprob"
    prompt = rating_prompt(record["instruction"], record["text"], score_only=score_only)
    return render_chat(tokenizer, prompt, assistant_prefix=SCORE_PREFILL if score_only else "")[0]


def complete(prompts: list[str], settings: Settings, backend: GenerationBackend, seed: int) -> list[Any]:
    """Per prompt: the next token's log-probabilities over "1".."5" (logprob), one completion (generate), or
    ``n_samples`` completions, sample ``k`` seeded ``seed * 1000 + k`` (generate_n)."""
    if settings.scoring == "logprob":
        return backend.next_token_logprobs(prompts, SCORE_TOKENS)
    if settings.scoring == "generate":
        return generate_once(prompts, settings, backend, seed)
    runs = [generate_once(prompts, settings, backend, seed * 1000 + k) for k in range(settings.n_samples)]
    return [list(samples) for samples in zip(*runs, strict=True)]


def parse(record: Record, answer: Any, settings: Settings) -> Record:
    """The pair with its score and the raw judge output (probabilities, text, or every sample's text)."""
    if settings.scoring == "logprob":
        score, confidence, probs = expected_score(answer)
        rated = {"score": score, "confidence": confidence, "judge_raw": {"probs": probs}}
    elif settings.scoring == "generate":
        completion: Completion = answer
        unfinished = int(not completion.finished)
        rated = {
            "score": parse_score(completion.text, completion.finished),
            "judge_raw": completion.text,
            "judge_unfinished": unfinished,
        }
    else:
        parsed = [s for s in (parse_score(c.text, c.finished) for c in answer) if s is not None]
        score = sum(parsed) / len(parsed) if parsed else None
        unfinished = sum(not c.finished for c in answer)
        rated = {"score": score, "n_parsed": len(parsed), "judge_raw": [c.text for c in answer], "judge_unfinished": unfinished}
    return {**record, **rated, "judge_model": settings.judge_model, "scoring": settings.scoring}


TASK = GenerationTask(
    name="pair_rating",
    seed_namespace="curate",
    settings=Settings,
    input_columns=("instruction", "text"),
    output_columns=("score", "confidence", "n_parsed", "judge_raw", "judge_unfinished", "judge_model", "scoring"),
    render=render,
    parse=parse,
    complete=complete,
    accounting={"unfinished_ratings": lambda r: r.get("judge_unfinished", 0)},  # ratings cut at max_new_tokens
)
