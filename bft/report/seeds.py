"""Seeds and honest comparisons: mean and 95% CI per setting over seeds, and paired differences between settings.

A *setting* is everything a run was configured with except ``run.seed`` (method, model, data sizes, rewriter,
curation, eval set, judge, reference). Two settings are compared only on what they share: the same eval set, judge
and reference, the seeds both ran, and, within each seed, the instructions both were judged on. The unit is one
(seed, instruction) pair; the difference of win rates is bootstrapped over those units
(:func:`bft.eval.stats.paired_comparison`). Without per-instruction judgements the comparison falls back to the
per-seed win rates (a paired t interval over seeds). A difference whose 95% interval contains 0 is marked "within
noise".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bft.report.aggregate import MISSING, fmt, is_missing

SETTING_FIELDS = (
    "method",
    "model",
    "seed_source",
    "seed_size",
    "corpus",
    "rewriter",
    "rewriter_mode",
    "curation_scoring",
    "curation_threshold",
    "curation_iterations",
    "max_generated",
    "baseline_file",
    "corpus_bucket",
    "final_steps",
    "final_lr",
    "seed_tag",
    "web_tag",
    "inference_tag",
)
JUDGING_FIELDS = ("eval_set", "annotator", "reference")


def _part(value: Any) -> str:
    return "?" if is_missing(value) else str(value)


def setting_label(run: Mapping[str, Any]) -> str:
    """Everything but the seed and the judging, as one readable string."""
    return ", ".join(f"{k}={_part(run.get(k))}" for k in SETTING_FIELDS if not is_missing(run.get(k)))


def judging_label(run: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_part(run.get(k))}" for k in JUDGING_FIELDS)


def t_quantile(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def mean_ci(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and half-width of the 95% t interval across seeds (None for the width with one seed)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, t_quantile(len(values) - 1) * sd / math.sqrt(len(values))


def _groups(runs: pd.DataFrame) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs.to_dict("records") if len(runs) else []:
        if not is_missing(r.get("win_rate")):
            groups.setdefault((judging_label(r), setting_label(r)), []).append(r)
    return groups


def calibration_cell(group: list[dict[str, Any]]) -> str:
    """The judge's measured agreement as the runs recorded it, or 'uncalibrated'."""
    briefs = [r.get("judge_calibration") for r in group if isinstance(r.get("judge_calibration"), Mapping)]
    if not briefs:
        return "uncalibrated"
    b = max(briefs, key=lambda x: str(x.get("created_at") or ""))

    def pct(value: Any) -> str:
        return MISSING if is_missing(value) else f"{100 * float(value):.1f}%"

    return (
        f"agrees {pct(b.get('agreement'))} (longer wins {pct(b.get('longer_wins_agreement'))}, n={b.get('n_pairs')}, {b.get('gold')})"
    )


def seeds_table_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One line per setting and judging: seeds, runs, mean ± 95% CI of the win rate over seeds."""
    lines = []
    for (judging, setting), group in sorted(_groups(runs).items()):
        mean, half = mean_ci([float(r["win_rate"]) for r in group])
        seeds = sorted({_part(r.get("seed")) for r in group})
        lines.append(
            {
                "setting": setting,
                "judging": judging,
                "seeds": " ".join(seeds),
                "runs": str(len(group)),
                "win rate": fmt(mean) + ("" if half is None else f" ± {half:.2f}"),
                "judge calibration": calibration_cell(group),
            }
        )
    return pd.DataFrame(lines, columns=["setting", "judging", "seeds", "runs", "win rate", "judge calibration"])


def run_preferences(run: Mapping[str, Any]) -> dict[str, float] | None:
    """instruction -> preference of a run, from alpaca_eval's annotations.json next to its leaderboard (or None)."""
    leaderboard = run.get("leaderboard")
    if is_missing(leaderboard) or not leaderboard:
        return None
    folder = Path(str(leaderboard)).parent
    files = sorted(folder.glob("**/annotations.json")) if folder.is_dir() else []
    if not files:
        return None
    df = pd.read_json(files[0])
    if not {"instruction", "preference"} <= set(df.columns):
        return None
    prefs = pd.to_numeric(df["preference"], errors="coerce").replace({0.0: 1.5})
    return {str(i): float(p) for i, p in zip(df["instruction"], prefs, strict=True) if 1.0 <= p <= 2.0}


def compare(group_a: list[dict[str, Any]], group_b: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Paired difference A - B on shared seeds (and shared instructions when judgements are found)."""
    from bft.eval.stats import paired_comparison

    by_seed_a = {_part(r.get("seed")): r for r in group_a}
    by_seed_b = {_part(r.get("seed")): r for r in group_b}
    seeds = sorted(set(by_seed_a) & set(by_seed_b))
    if not seeds:
        return None
    prefs_a, prefs_b = [], []
    for s in seeds:
        pa, pb = run_preferences(by_seed_a[s]), run_preferences(by_seed_b[s])
        if pa is None or pb is None:
            prefs_a = []
            break
        shared = sorted(set(pa) & set(pb))
        prefs_a += [pa[i] for i in shared]
        prefs_b += [pb[i] for i in shared]
    if prefs_a:
        res = paired_comparison(prefs_a, prefs_b)
        return {"seeds": seeds, "unit": f"{res['n']} (seed, instruction) pairs", **res}
    diffs = [float(by_seed_a[s]["win_rate"]) - float(by_seed_b[s]["win_rate"]) for s in seeds]
    mean, half = mean_ci(diffs)
    if half is None:
        return {"seeds": seeds, "unit": "1 seed, no judgements found", "difference": mean, "ci_low": None, "ci_high": None}
    return {
        "seeds": seeds,
        "unit": f"{len(seeds)} seeds (win rates)",
        "difference": mean,
        "ci_low": mean - half,
        "ci_high": mean + half,
    }


def comparisons_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Every pair of settings judged the same way: paired difference, 95% CI, and whether it is within noise."""
    by_judging: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for (judging, setting), group in _groups(runs).items():
        by_judging.setdefault(judging, {})[setting] = group
    lines = []
    for judging, settings in sorted(by_judging.items()):
        for (sa, ga), (sb, gb) in itertools.combinations(sorted(settings.items()), 2):
            res = compare(ga, gb)
            if res is None:
                continue
            lo, hi = res.get("ci_low"), res.get("ci_high")
            verdict = MISSING if lo is None else ("within noise" if lo <= 0 <= hi else ("A better" if lo > 0 else "B better"))
            lines.append(
                {
                    "A": sa,
                    "B": sb,
                    "judging": judging,
                    "A - B": fmt(res["difference"]),
                    "95% CI": MISSING if lo is None else f"[{lo:.2f}, {hi:.2f}]",
                    "paired on": f"seeds {' '.join(res['seeds'])}; {res['unit']}",
                    "verdict": verdict,
                }
            )
    return pd.DataFrame(lines, columns=["A", "B", "judging", "A - B", "95% CI", "paired on", "verdict"])
