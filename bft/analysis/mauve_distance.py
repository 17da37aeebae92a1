"""MAUVE between two sets of response features (BFT Table 3), with small-set guards."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_RECORDS = 10


@dataclass
class MauveResult:
    score: float | None
    reason: str = ""


def compute_mauve(p: np.ndarray, q: np.ndarray, *, min_records: int = MIN_RECORDS, seed: int = 0) -> MauveResult:
    """MAUVE(P, Q) on precomputed features; None with a reason when either side has < ``min_records`` rows."""
    if len(p) < min_records or len(q) < min_records:
        return MauveResult(None, f"too few records for MAUVE ({len(p)} vs {len(q)}; need >= {min_records} each)")
    import mauve

    out = mauve.compute_mauve(
        p_features=np.asarray(p, dtype=np.float32),
        q_features=np.asarray(q, dtype=np.float32),
        num_buckets="auto",
        seed=seed,
        verbose=False,
    )
    return MauveResult(float(out.mauve))


def split_half(features: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves of ``features``: the reference set's self-MAUVE ceiling (sampling noise only)."""
    order = np.random.default_rng(seed).permutation(len(features))
    half = len(features) // 2
    return features[order[:half]], features[order[half : 2 * half]]
