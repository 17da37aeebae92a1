"""Length statistics of instructions and responses, in characters and in tokens (BFT Table 6)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def length_stats(values: Sequence[int]) -> dict[str, float | None]:
    """Mean and median of ``values``; both None when empty."""
    if not values:
        return {"mean": None, "median": None}
    return {"mean": float(statistics.fmean(values)), "median": float(statistics.median(values))}


def char_lengths(texts: Sequence[str]) -> list[int]:
    return [len(t) for t in texts]


def token_lengths(texts: Sequence[str], tokenizer: Any, batch_size: int = 256) -> list[int]:
    """Token counts without special tokens, for any Hugging Face tokenizer."""
    out: list[int] = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        out.extend(len(ids) for ids in tokenizer(batch, add_special_tokens=False)["input_ids"])
    return out


def load_length_tokenizer(name: str = "smollm2_135m") -> Any:
    """The SmolLM2 tokenizer (from the model registry) used for all token lengths."""
    from bft.models.registry import load_tokenizer

    return load_tokenizer(name)
