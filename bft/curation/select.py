"""Selection of scored pairs: threshold on the (expected) score, or top-k / top-fraction."""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]


def select(scored: list[Record], threshold: float | None, top_k: int | None, top_fraction: float | None) -> list[bool]:
    """A keep flag per record. Unparsed scores (None) are never kept. Ties at the cut keep input order."""
    valid = [i for i, r in enumerate(scored) if r.get("score") is not None]
    keep = [False] * len(scored)
    if top_k is not None or top_fraction is not None:
        limit = top_k if top_k is not None else round(len(scored) * float(top_fraction))
        ranked = sorted(valid, key=lambda i: -float(scored[i]["score"]))
        for i in ranked[: max(0, limit)]:
            keep[i] = True
        return keep
    if threshold is None:
        raise ValueError("curation: set one of threshold, top_k or top_fraction")
    for i in valid:
        keep[i] = float(scored[i]["score"]) >= threshold - 1e-9
    return keep
