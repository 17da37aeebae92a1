"""Lexical diversity: unique word trigrams of a set of texts (BFT Fig. 3)."""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lowercased word tokens (runs of letters/digits/underscore); punctuation is dropped."""
    return _WORD.findall(text.lower())


def word_ngrams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    """The distinct word n-grams of one text; n-grams never cross text boundaries."""
    toks = words(text)
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def unique_ngrams(texts: Iterable[str], n: int = 3) -> int:
    """Number of distinct word n-grams over all texts together."""
    seen: set[tuple[str, ...]] = set()
    for text in texts:
        seen |= word_ngrams(text, n)
    return len(seen)


def per_thousand(count: int, n_records: int) -> float | None:
    """``count`` per 1,000 records (None for an empty dataset)."""
    return None if n_records == 0 else count * 1000.0 / n_records
