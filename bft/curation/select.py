"""Selection of scored pairs: a threshold on the (expected) score, and/or a cap to the top-k / top fraction."""

from __future__ import annotations

from collections.abc import Sequence


def select(scores: Sequence[float | None], threshold: float | None, top_k: int | None, top_fraction: float | None) -> list[bool]:
    """A keep flag per score (one per record, in order: the records themselves stay on disk). Unparsed scores
    (None) are never kept.

    ``threshold`` keeps scores >= threshold; ``top_k`` / ``top_fraction`` (of all candidates) then keep only the
    best of those, ties broken by input order. At least one of the three must be set.
    """
    if threshold is None and top_k is None and top_fraction is None:
        raise ValueError("curation: set one of threshold, top_k or top_fraction")
    eligible = [i for i, s in enumerate(scores) if s is not None and (threshold is None or float(s) >= threshold - 1e-9)]
    if top_k is not None or top_fraction is not None:
        limit = top_k if top_k is not None else round(len(scores) * float(top_fraction))
        eligible = sorted(eligible, key=lambda i: -float(scores[i]))[: max(0, limit)]
    keep = [False] * len(scores)
    for i in eligible:
        keep[i] = True
    return keep
