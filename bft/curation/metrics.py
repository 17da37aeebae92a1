"""Accounting of one curation iteration, and selection quality against human labels."""

from __future__ import annotations

from collections import Counter
from statistics import mean, median
from typing import Any


def _length_stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {"n": 0, "mean_chars": 0.0, "median_chars": 0.0}
    return {"n": len(lengths), "mean_chars": round(mean(lengths), 1), "median_chars": float(median(lengths))}


def curation_accounting(scores: list[float | None], lengths: list[int], keep: list[bool], unfinished: int = 0) -> dict[str, Any]:
    """Histogram of (rounded) scores, parse failures (every record without a score), ratings cut at
    ``max_new_tokens`` (``unfinished_ratings``: no score, dropped; with ``generate_n`` counted per sample), kept
    count/fraction, lengths (characters of each record's ``text``) of kept vs dropped."""
    total = len(scores)
    unparsed = sum(1 for s in scores if s is None)
    histogram = Counter(str(round(float(s))) for s in scores if s is not None)
    kept = sum(keep)
    return {
        "candidates": total,
        "parse_failures": unparsed,
        "parse_failure_rate": round(unparsed / total, 4) if total else 0.0,
        "unfinished_ratings": unfinished,
        "score_histogram": {k: histogram.get(k, 0) for k in ["1", "2", "3", "4", "5"]},
        "kept": kept,
        "kept_fraction": round(kept / total, 4) if total else 0.0,
        "kept_lengths": _length_stats([n for n, k in zip(lengths, keep, strict=True) if k]),
        "dropped_lengths": _length_stats([n for n, k in zip(lengths, keep, strict=True) if not k]),
    }


def selection_quality(labels: list[int], keep: list[bool], scores: list[float | None]) -> dict[str, float | None]:
    """Precision and recall of the kept set against binary human labels, and AUC of the scores.

    Unparsed scores count as the lowest possible score for AUC. AUC is None when only one class is present.
    """
    from sklearn.metrics import roc_auc_score

    true_pos = sum(1 for y, k in zip(labels, keep, strict=True) if y and k)
    kept = sum(keep)
    positives = sum(1 for y in labels if y)
    precision = true_pos / kept if kept else 0.0
    recall = true_pos / positives if positives else 0.0
    auc = None
    if 0 < positives < len(labels):
        auc = float(roc_auc_score(labels, [s if s is not None else 0.0 for s in scores]))
    return {"precision": round(precision, 4), "recall": round(recall, 4), "auc": None if auc is None else round(auc, 4)}


def binarize_labels(values: list[Any]) -> list[int]:
    """Human labels are either all 0/1, or on the 1-5 scale (then >= 4 counts as good)."""
    numbers = [float(v) for v in values]
    if any(n > 1 for n in numbers):
        return [int(n >= 4) for n in numbers]
    return [int(n >= 1) for n in numbers]
