"""How far a judge can be believed: its agreement with gold judgements, next to "longer wins" and chance.

Pure arithmetic on aligned preference arrays, in alpaca_eval's encoding (1 = ``output_1`` wins, 2 = ``output_2``
wins, 1.5 = draw; the legacy 0 = draw). Per-pair agreement is alpaca_eval's ``AbsoluteScoringRule`` (1 - |judge -
gold|) on the judge's *discrete* verdict, so a judge that calls a draw where gold has a winner scores 0.5, and a
"longer wins" judge is scored the same way as a model judge. Length preference follows alpaca_eval's
``Analyzer.get_length_biases`` (pairs whose lengths differ by more than 30 characters, non-draw verdicts only).

Every figure comes with its n and a 95% normal-approximation interval (mean +- 1.96 standard errors, the SE being
alpaca_eval's: the standard error of the per-pair scores).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SIGNIFICANT_DELTA_LENGTH = 30  # alpaca_eval.analyze.Analyzer.get_length_biases' default
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Figure:
    """A proportion with its count and 95% interval (all in [0, 1])."""

    value: float | None
    n: int
    ci_low: float | None
    ci_high: float | None

    def text(self) -> str:
        if self.value is None:
            return f"n/a (n={self.n})"
        return f"{100 * self.value:5.1f}% [{100 * self.ci_low:5.1f}, {100 * self.ci_high:5.1f}] (n={self.n})"


def figure(scores: np.ndarray) -> Figure:
    """Mean of per-pair scores in [0, 1] with a 95% interval (NaN-free input)."""
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    if n == 0:
        return Figure(None, 0, None, None)
    mean = float(scores.mean())
    se = float(scores.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return Figure(mean, n, max(0.0, mean - Z95 * se), min(1.0, mean + Z95 * se))


def chance_figure(n: int) -> Figure:
    """A fair coin judged on ``n`` pairs: 50% and the interval such a judge lands in 95% of the time."""
    if n == 0:
        return Figure(None, 0, None, None)
    half = Z95 * math.sqrt(0.25 / n)
    return Figure(0.5, n, 0.5 - half, 0.5 + half)


def normalise(prefs: Any) -> np.ndarray:
    """Preferences -> float array in [1, 2] (0 -> 1.5); NaN stays NaN (a failed judgement)."""
    arr = np.asarray(prefs, dtype=float).copy()
    arr[arr == 0.0] = 1.5
    bad = ~np.isnan(arr) & ((arr < 1.0) | (arr > 2.0))
    if bad.any():
        raise ValueError(f"preferences must lie in [1, 2] (0 = draw); got {arr[bad][:3].tolist()}")
    return arr


def discrete(prefs: np.ndarray) -> np.ndarray:
    """A soft preference -> the verdict it implies: 1, 2 or 1.5 (balanced, up to float rounding)."""
    draw = np.isclose(prefs, 1.5, rtol=0.0, atol=1e-9)
    return np.where(draw, 1.5, np.where(prefs < 1.5, 1.0, 2.0))


def agreement_scores(judge: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """alpaca_eval's absolute scoring rule on the judge's discrete verdict: 1 - |judge - gold| per pair."""
    return 1.0 - np.abs(discrete(judge) - gold)


def longer_wins(len_1: np.ndarray, len_2: np.ndarray) -> np.ndarray:
    """The "longer wins" judge: 1 when output_1 is longer, 2 when output_2 is, 1.5 on equal lengths."""
    return np.where(len_1 > len_2, 1.0, np.where(len_1 < len_2, 2.0, 1.5))


def length_balanced_index(gold: np.ndarray, len_1: np.ndarray, len_2: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices of a subset with as many pairs where gold preferred the shorter output as the longer one.

    Only pairs with a gold winner and different lengths qualify; the larger side is subsampled (seeded) to the size
    of the smaller one, so the "longer wins" judge scores exactly 50% there.
    """
    decided = (gold != 1.5) & (len_1 != len_2)
    longer_won = decided & ((gold == 1.0) == (len_1 > len_2))
    shorter_won = decided & ~longer_won
    a, b = np.flatnonzero(longer_won), np.flatnonzero(shorter_won)
    k = min(len(a), len(b))
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(a, size=k, replace=False), rng.choice(b, size=k, replace=False)]) if k else np.array([], int)
    return np.sort(chosen).astype(int)


def length_preference(verdict: np.ndarray, len_1: np.ndarray, len_2: np.ndarray) -> Figure:
    """How often a non-draw verdict picks the longer output, among pairs differing by > 30 characters."""
    verdict = discrete(verdict)
    mask = (np.abs(len_1 - len_2) > SIGNIFICANT_DELTA_LENGTH) & (verdict != 1.5)
    picked_longer = (verdict == 1.0) == (len_1 > len_2)
    return figure(picked_longer[mask].astype(float))


def position_bias(shown_verdict: np.ndarray) -> Figure:
    """How often a non-draw verdict picks the output shown first (in the order the judge saw)."""
    verdict = discrete(shown_verdict)
    decided = verdict != 1.5
    return figure((verdict[decided] == 1.0).astype(float))


def judge_figures(
    judge: np.ndarray, gold: np.ndarray, len_1: np.ndarray, len_2: np.ndarray, balanced: np.ndarray, swapped: np.ndarray
) -> dict[str, Any]:
    """Agreement, length-balanced agreement, position bias and length preference of one judge.

    ``judge`` and ``gold`` are in the gold file's orientation; ``swapped[i]`` says the judge was shown output_2 first.
    Pairs the judge failed on (NaN) are left out and counted.
    """
    ok = ~np.isnan(judge)
    in_balanced = np.zeros(len(judge), dtype=bool)
    in_balanced[balanced] = True
    shown = np.where(swapped, 3.0 - judge, judge)
    return {
        "agreement": asdict(figure(agreement_scores(judge[ok], gold[ok]))),
        "length_balanced_agreement": asdict(figure(agreement_scores(judge[ok & in_balanced], gold[ok & in_balanced]))),
        "position_bias": asdict(position_bias(shown[ok])),
        "length_preference": asdict(length_preference(judge[ok], len_1[ok], len_2[ok])),
        "n_failed": int((~ok).sum()),
    }


def calibration_figures(judge: Any, gold: Any, len_1: Any, len_2: Any, swapped: Any, seed: int = 0) -> dict[str, dict[str, Any]]:
    """The judge, the "longer wins" baseline and chance on the same pairs (and the same length-balanced subset)."""
    judge, gold = normalise(judge), normalise(gold)
    if np.isnan(gold).any():
        raise ValueError("gold preferences must not be missing")
    len_1, len_2 = np.asarray(len_1, dtype=float), np.asarray(len_2, dtype=float)
    swapped = np.asarray(swapped, dtype=bool)
    if not (len(judge) == len(gold) == len(len_1) == len(len_2) == len(swapped)):
        raise ValueError("judge, gold, lengths and order flags must be equally long")
    balanced = length_balanced_index(gold, len_1, len_2, seed)
    n, n_bal = len(gold), len(balanced)
    coin = asdict(chance_figure(n))
    return {
        "judge": judge_figures(judge, gold, len_1, len_2, balanced, swapped),
        "longer_wins": judge_figures(longer_wins(len_1, len_2), gold, len_1, len_2, balanced, swapped),
        "chance": {
            "agreement": coin,
            "length_balanced_agreement": asdict(chance_figure(n_bal)),
            "position_bias": coin,
            "length_preference": coin,
            "n_failed": 0,
        },
    }


FIGURE_NAMES = ("agreement", "length_balanced_agreement", "position_bias", "length_preference")


def format_calibration(result: dict[str, Any]) -> str:
    """The calibration table: one row per figure, columns judge / longer wins / chance."""
    figs = result["figures"]
    cols = ("judge", "longer_wins", "chance")
    lines = [
        f"calibration of {result['annotator_id']} against {result['gold_name']} (gold judge: {result.get('gold_annotator') or '?'})",
        f"pairs: {result['n_pairs']} of {result['n_gold']} gold pairs (max_pairs={result.get('max_pairs')}, seed={result['seed']}), "
        f"length-balanced subset: {figs['judge']['length_balanced_agreement']['n']} judged pairs",
        f"{'figure':28s}" + "".join(f"{c:>36s}" for c in cols),
    ]
    for name in FIGURE_NAMES:
        row = f"{name.replace('_', ' '):28s}"
        for c in cols:
            row += f"{Figure(**figs[c][name]).text():>36s}"
        lines.append(row)
    if result.get("one_order_figures"):
        one = result["one_order_figures"]["judge"]
        lines.append(
            "the same judge, one order only:   "
            + "   ".join(f"{name.replace('_', ' ')} {Figure(**one[name]).text()}" for name in ("agreement", "position_bias"))
        )
    if figs["judge"]["n_failed"]:
        lines.append(f"judge failed on {figs['judge']['n_failed']} pair(s) (left out)")
    lines.append(
        "agreement: 1 - |verdict - gold| per pair (draw vs win = 0.5); position bias: share of verdicts for the output shown first; "
        "length preference: share of verdicts for the longer output (length gap > 30 chars). 95% intervals."
    )
    return "\n".join(lines)
