"""The generation interface every pipeline step talks to (backends are built by :mod:`bft.generation.factory`).

Backends take fully rendered prompt strings (``bft.prompts.render_chat`` output, special tokens included) and
tokenise them without adding special tokens. Outputs come back in the order of the prompts.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from bft.errors import BftError


class PromptTooLongError(BftError, ValueError):
    """A prompt that does not fit in the model's context (vLLM refuses these too); ``index``: its place in the call."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def check_context(ids: list[list[int]], context: int | None, room: int, source: str = "max_position_embeddings") -> None:
    """Raise :class:`PromptTooLongError` for the first prompt that leaves fewer than ``room`` positions of the
    model's ``context`` (``None``: unknown, nothing checked; ``source``: where that limit comes from), before any
    model work."""
    if context is None:
        return
    for i, x in enumerate(ids):
        if len(x) + room > context:
            raise PromptTooLongError(
                f"prompt {i + 1} of {len(ids)} is {len(x)} tokens, past the model's context of {context} tokens "
                f"({source}); drop long documents in the corpus stage: corpus.max_chars, or "
                "corpus.tokenizer with corpus.max_tokens",
                i,
            )


@dataclass
class Sampling:
    """How to decode. ``temperature == 0`` or ``do_sample=False`` means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    do_sample: bool = True
    min_new_tokens: int = 0  # EOS is suppressed until this many tokens exist (benchmarks force exact lengths)

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature <= 0.0


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    new_tokens: int  # generated tokens, the EOS token included when it was produced
    finished: bool  # True when the sequence ended with an end-of-sequence / end-of-turn token


@runtime_checkable
class GenerationBackend(Protocol):
    tokenizer: Any  # the model's tokenizer, whose chat template renders the prompts

    def generate(self, prompts: list[str], sampling: Sampling, seed: int) -> list[Completion]:
        """One completion per prompt, in the order of ``prompts``."""
        ...

    def next_token_logprobs(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        """``log p(candidate's single token | prompt)`` for each prompt and candidate (one forward pass, no sampling)."""
        ...

    def stats(self) -> dict[str, Any]:
        """Cumulative counters: prompt tokens, new tokens, seconds."""
        ...


class BackendStats:
    """The counters every backend reports through ``stats()`` (stage manifests and W&B read these names)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, key: str, value: float) -> None:
        self.counts[key] += value

    def generated(self, prompt_ids: list[list[int]], completions: list[Completion], start: float) -> None:
        """One ``generate`` call that began at ``time.perf_counter() == start``."""
        self.counts["prompt_tokens"] += sum(len(x) for x in prompt_ids)
        self.counts["new_tokens"] += sum(c.new_tokens for c in completions)
        self.counts["sequences"] += len(completions)
        self.counts["generate_seconds"] += time.perf_counter() - start

    def scored(self, prompt_ids: list[list[int]], start: float) -> None:
        """One ``next_token_logprobs`` call that began at ``time.perf_counter() == start``."""
        self.counts["prompt_tokens"] += sum(len(x) for x in prompt_ids)
        self.counts["scored_prompts"] += len(prompt_ids)
        self.counts["logprob_seconds"] += time.perf_counter() - start

    def as_dict(self) -> dict[str, Any]:
        return dict(self.counts)

    def padding(self) -> dict[str, float]:
        """Work spent on padding (hf backend): the share of prefill tokens run that were padding, and of the KV
        positions that decode attention read that no query needed (left padding, the buffer's unfilled tail)."""
        c = self.counts
        run = c["prefill_tokens"] + c["prefill_padding_tokens"]
        return {
            "prefill_padding_fraction": c["prefill_padding_tokens"] / run if run else 0.0,
            "decode_kv_padding_fraction": 1 - c["decode_kv_needed"] / c["decode_kv_read"] if c["decode_kv_read"] else 0.0,
        }


def setting(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg[key]`` of a generation config that is a DictConfig, a dict or a dataclass (job files carry dicts)."""
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def single_token_ids(tokenizer, candidates: list[str]) -> list[int]:
    """The token id of each candidate string, which must be exactly one token (e.g. the scores "1".."5")."""
    ids = []
    for candidate in candidates:
        tokens = tokenizer(candidate, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise ValueError(f"candidate {candidate!r} is {len(tokens)} tokens; next_token_logprobs needs single tokens")
        ids.append(tokens[0])
    return ids
