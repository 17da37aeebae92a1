"""Paired comparison of two systems judged on the same instructions (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def preferences_to_wins(prefs: Sequence[float]) -> np.ndarray:
    """alpaca_eval preferences (1 = reference wins, 2 = model wins, 1.5 = draw, 0 = legacy draw) -> win in [0, 1]."""
    arr = np.asarray(prefs, dtype=float)
    arr = np.where(arr == 0.0, 1.5, arr)
    if np.isnan(arr).any() or ((arr < 1.0) | (arr > 2.0)).any():
        raise ValueError("preferences must lie in [1, 2] (or be 0 for a legacy draw), without missing values")
    return arr - 1.0


def paired_comparison(prefs_a: Sequence[float], prefs_b: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict[str, float | int]:
    """Win rate of A minus win rate of B (percentage points) on the same instructions, with a bootstrap 95% CI.

    ``prefs_a[i]`` and ``prefs_b[i]`` must judge the same instruction against the same reference. Instructions are
    resampled with replacement (paired), so the shared instruction difficulty cancels out.
    """
    a, b = preferences_to_wins(prefs_a), preferences_to_wins(prefs_b)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two equally long, non-empty preference lists; got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_boot, len(diff)))
    boot = diff[idx].mean(axis=1) * 100
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {
        "n": int(len(diff)),
        "win_rate_a": float(a.mean() * 100),
        "win_rate_b": float(b.mean() * 100),
        "difference": float(diff.mean() * 100),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p_a_not_better": float((boot <= 0).mean()),  # one-sided bootstrap tail
        "n_boot": int(n_boot),
    }
