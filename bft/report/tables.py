"""The report's tables: the papers' figures beside the mean of this project's matching runs.

Every builder takes the runs frame of :func:`bft.report.load.load_runs` and returns a :class:`ReportTable` whose
cells are already formatted strings ("—" wherever a figure is missing; nothing is ever filled in).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bft.report.aggregate import MISSING, Estimate, estimate, fmt, is_missing
from bft.report.mapping import comparability_reason, corpus_row, paper_row_label, scale_of, tables_for
from bft.report.paper_tables import (
    CORPUS_ABLATION,
    HB_SCALING_ALPHA,
    HB_SELECTION_QUALITY,
    TABLE_TITLES,
    table_rows,
)

REWRITING_METHODS = ("rewrite_only", "backandforth", "distill")


@dataclass
class ReportTable:
    key: str  # file stem of the Markdown / CSV outputs
    title: str
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def setting(run: Mapping[str, Any], drop: Iterable[str] = ()) -> str:
    """The scale a run ran at: 'local, smollm2_135m, embedded, seed=16, max=all' (``drop`` leaves parts out)."""
    max_generated = run.get("max_generated")
    parts = {
        "scale": scale_of(run.get("tags"), run.get("model")),
        "model": str(run.get("model") or "?"),
        "corpus": str(run.get("corpus") or "?"),
        "seed": f"seed={run.get('seed_size') if not is_missing(run.get('seed_size')) else '?'}",
        "max": f"max={'all' if is_missing(max_generated) else int(max_generated)}",
    }
    return ", ".join(v for k, v in parts.items() if k not in set(drop))


def _records(runs: pd.DataFrame) -> list[dict[str, Any]]:
    return runs.to_dict("records") if len(runs) else []


def _group(records: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> dict[Any, list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    return groups


def _est(group: list[dict[str, Any]], metric: str = "win_rate") -> Estimate:
    ses = [r.get("standard_error") for r in group] if metric == "win_rate" else None
    return estimate([r.get(metric) for r in group], ses)


def _ours(e: Estimate) -> dict[str, str]:
    return {"this project": fmt(e.mean), "SE": fmt(e.se), "runs": str(e.n)}


# --- BFT Tables 1, 2, 10 -------------------------------------------------------------------------------------


def _paper_table_records(runs: pd.DataFrame, table: str) -> tuple[list[dict[str, Any]], int]:
    chosen, unmatched = [], 0
    for r in _records(runs):
        if table not in tables_for(r.get("tags"), r.get("model"), r.get("annotator")):
            continue
        label = paper_row_label(table, r.get("method"), r.get("baseline_file"), r.get("max_generated"))
        if label is None:
            unmatched += 1
            continue
        if comparability_reason(r, table) is not None:
            continue  # listed in the "not comparable" table with its reason
        chosen.append({**r, "_row": label, "_setting": setting(r)})
    return chosen, unmatched


def paper_table(runs: pd.DataFrame, table: str) -> ReportTable:
    """BFT Table 1, 2 or 10: one line per paper row and setting of matching runs ("—" when none ran)."""
    chosen, unmatched = _paper_table_records(runs, table)
    by_row = _group(chosen, lambda r: r["_row"])
    paper = {p.data: p for p in table_rows(table)}
    labels = list(paper) + [label for label in by_row if label not in paper]
    lines: list[dict[str, str]] = []
    for label in labels:
        p = paper.get(label)
        settings = _group(by_row.get(label, []), lambda r: r["_setting"]) or {MISSING: []}
        for scale, group in settings.items():
            line = {"data": label}
            if table == "table10":
                lc, raw = _est(group, "length_controlled_winrate"), _est(group)
                line |= {
                    "paper LC": fmt(p.ae2_lc_win_rate if p else None),
                    "paper raw": fmt(p.ae2_win_rate if p else None),
                    "this project LC": fmt(lc.mean),
                    "this project raw": fmt(raw.mean),
                    "SE (raw)": fmt(raw.se),
                    "runs": str(max(lc.n, raw.n)),
                }
            else:
                line |= {"paper": fmt(p.ae1_win_rate if p else None), **_ours(_est(group))}
            lines.append(line | {"scale": scale})
    notes = ["this project: mean over matching runs; SE: across runs when runs >= 2, else the run's AlpacaEval SE."]
    if unmatched:
        notes.append(f"{unmatched} run(s) of this table map to no paper row (unknown method or baseline file).")
    return ReportTable(table, TABLE_TITLES[table], pd.DataFrame(lines), notes)


def not_comparable_table(runs: pd.DataFrame) -> ReportTable:
    """Runs of a paper table's recipe whose eval set, judge, reference or setting differ: their own table, with why."""
    lines = []
    for r in _records(runs):
        for table in tables_for(r.get("tags"), r.get("model"), r.get("annotator")):
            label = paper_row_label(table, r.get("method"), r.get("baseline_file"), r.get("max_generated"))
            reason = comparability_reason(r, table) if label is not None else None
            if reason is None:
                continue
            lc = r.get("length_controlled_winrate")
            lines.append(
                {
                    "recipe": label,
                    "would be": TABLE_TITLES[table].split(" - ")[0],
                    "win rate": fmt(r.get("win_rate")),
                    "SE": fmt(r.get("standard_error")),
                    "LC": fmt(lc),
                    "judging": f"{r.get('eval_set') or '?'} / {r.get('annotator') or '?'} / ref {r.get('reference') or '?'}",
                    "scale": setting(r),
                    "not beside the paper because": reason,
                }
            )
    columns = ["recipe", "would be", "win rate", "SE", "LC", "judging", "scale", "not beside the paper because"]
    return ReportTable(
        "not_comparable",
        "Runs not comparable with the papers' tables (different eval set, judge, reference or setting)",
        pd.DataFrame(lines, columns=columns),
        [
            "A paper row is placed beside a run only when the eval set, annotator, reference and paper setting match. "
            "Length-controlled win rates exist only for the 805 official instructions in the official order."
        ],
    )


# --- corpus ablation -------------------------------------------------------------------------------------------


def corpus_table(runs: pd.DataFrame) -> ReportTable:
    """BFT's corpus ablation (3.2K pairs, 7B) beside runs grouped by corpus, method and setting."""
    recs = [r for r in _records(runs) if r.get("method") != "baseline_dataset"]
    by_corpus = _group(recs, lambda r: corpus_row(r.get("corpus")) or str(r.get("corpus") or "?"))
    labels = list(CORPUS_ABLATION) + [c for c in by_corpus if c not in CORPUS_ABLATION]
    lines = []
    for label in labels:
        groups = _group(by_corpus.get(label, []), lambda r: (r.get("method") or "?", setting(r, drop=("corpus",))))
        for (method, scale), group in (groups or {(MISSING, MISSING): []}).items():
            lines.append(
                {"corpus": label, "method": method, "paper": fmt(CORPUS_ABLATION.get(label)), **_ours(_est(group)), "scale": scale}
            )
    return ReportTable(
        "corpus_ablation",
        "Corpus ablation - BFT: 3.2K pairs, Llama-2-7B, AlpacaEval 1.0",
        pd.DataFrame(lines),
        ["Dolma runs count as 'Dolma head' unless the corpus name says 'middle'."],
    )


# --- curves over this project's runs -------------------------------------------------------------------------


def _sort_key(value: Any) -> tuple[int, float, str]:
    return (1, 0.0, str(value)) if is_missing(value) else (0, float(value), "")


def seed_size_table(runs: pd.DataFrame) -> ReportTable:
    """Win rate per seed size (ascending), within each method and setting."""
    recs = [r for r in _records(runs) if not is_missing(r.get("win_rate"))]
    groups = _group(recs, lambda r: (r.get("method") or "?", setting(r, drop=("seed",)), r.get("seed_size")))
    lines = [
        {"method": m, "seed size": fmt(size, 0), "paper": MISSING, **_ours(_est(g)), "scale": s}
        for (m, s, size), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], _sort_key(kv[0][2])))
    ]
    columns = ["method", "seed size", "paper", "this project", "SE", "runs", "scale"]
    return ReportTable(
        "seed_size",
        "Seed-size curve - win rate by number of seed pairs",
        pd.DataFrame(lines, columns=columns),
        ["The papers report no seed-size curve; both use the 3.2K OpenAssistant seed."],
    )


def rewriter_table(runs: pd.DataFrame) -> ReportTable:
    """Win rate per rewriter (and mode) for the methods that use one."""
    recs = [r for r in _records(runs) if r.get("method") in REWRITING_METHODS]
    groups = _group(recs, lambda r: (str(r.get("rewriter") or "?"), str(r.get("rewriter_mode") or "?"), r.get("method"), setting(r)))
    lines = [
        {"rewriter": rw, "mode": mode, "method": m, "paper": MISSING, **_ours(_est(g)), "scale": s}
        for (rw, mode, m, s), g in sorted(groups.items())
    ]
    columns = ["rewriter", "mode", "method", "paper", "this project", "SE", "runs", "scale"]
    return ReportTable(
        "rewriter",
        "Rewriter comparison - win rate by rewriting model",
        pd.DataFrame(lines, columns=columns),
        ["BFT rewrites with Llama-2-70B-chat; the papers give no per-rewriter figures."],
    )


def data_size(run: Mapping[str, Any]) -> float | None:
    """N for the data-scale curve: the cap ``max_generated`` when set, else the pairs actually generated."""
    for key in ("max_generated", "n_generated"):
        value = run.get(key)
        if not is_missing(value) and float(value) > 0:
            return float(value)
    return None


def fit_intercept(points: Iterable[tuple[float, float]], alpha: float = HB_SCALING_ALPHA) -> float | None:
    """C of w = alpha * ln N + C by least squares with alpha fixed: mean of w - alpha * ln N."""
    residuals = [w - alpha * math.log(n) for n, w in points if n > 0 and not is_missing(w)]
    return sum(residuals) / len(residuals) if residuals else None


def data_scale_table(runs: pd.DataFrame) -> ReportTable:
    """Win rate per number of generated pairs, with HB's fit (alpha = 6.95, C fitted to each series' runs)."""
    recs = [{**r, "_N": data_size(r)} for r in _records(runs) if r.get("method") != "baseline_dataset"]
    recs = [r for r in recs if r["_N"] is not None and not is_missing(r.get("win_rate"))]
    series = _group(recs, lambda r: (r.get("method") or "?", setting(r, drop=("max",))))
    lines = []
    for (method, scale), group in sorted(series.items()):
        c = fit_intercept([(r["_N"], float(r["win_rate"])) for r in group])
        for n, g in sorted(_group(group, lambda r: r["_N"]).items()):
            generated = estimate([r.get("n_generated") for r in g])
            lines.append(
                {
                    "method": method,
                    "N": fmt(n, 0),
                    "generated": fmt(generated.mean, 0),
                    **_ours(_est(g)),
                    "HB fit": fmt(None if c is None else HB_SCALING_ALPHA * math.log(n) + c),
                    "C": fmt(c),
                    "scale": scale,
                }
            )
    columns = ["method", "N", "generated", "this project", "SE", "runs", "HB fit", "C", "scale"]
    notes = [
        f"HB fit: w = {HB_SCALING_ALPHA} ln N + C with C fitted (least squares, slope fixed) to each series' runs; "
        "N = data.max_generated, or the generated count when uncapped."
    ]
    return ReportTable("data_scale", "Data-scale curve - win rate by generated pairs N", pd.DataFrame(lines, columns=columns), notes)


def _histogram_sum(histograms: Iterable[Any]) -> str:
    total: dict[str, int] = {}
    for h in histograms:
        for score, count in (h or {}).items():
            total[str(score)] = total.get(str(score), 0) + int(count or 0)
    if not total:
        return MISSING
    return " ".join(f"{k}:{total[k]}" for k in sorted(total, key=_sort_key))


def curation_records(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """One record per run and curation iteration (``curate_0``, ``curate_1``, ...)."""
    out = []
    for r in _records(runs):
        for name, acc in (r.get("curation") or {}).items():
            labels = (acc or {}).get("labels") or {}
            out.append(
                {
                    "iteration": name,
                    "method": r.get("method") or "?",
                    "threshold": r.get("curation_threshold"),
                    "scoring": r.get("curation_scoring"),
                    "setting": setting(r),
                    "run": r.get("name"),
                    "kept": acc.get("kept"),
                    "kept_fraction": acc.get("kept_fraction"),
                    "parse_failure_rate": acc.get("parse_failure_rate"),
                    "score_histogram": acc.get("score_histogram"),
                    "precision": labels.get("precision"),
                    "recall": labels.get("recall"),
                }
            )
    return out


def _iteration_index(name: str) -> int | None:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def curation_table(runs: pd.DataFrame) -> ReportTable:
    """Per curation iteration: kept fraction, parse-failure rate, summed score histogram, selection P / R."""
    groups = _group(curation_records(runs), lambda r: (r["iteration"], r["method"], r["threshold"], r["scoring"], r["setting"]))
    lines = []
    for (it, method, threshold, scoring, scale), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2:]))):
        paper = HB_SELECTION_QUALITY.get(_iteration_index(it) if _iteration_index(it) is not None else -1)
        p, rc = estimate([r["precision"] for r in g]), estimate([r["recall"] for r in g])
        lines.append(
            {
                "iteration": it,
                "method": method,
                "threshold": fmt(threshold, 1),
                "scoring": str(scoring or MISSING),
                "kept": fmt(estimate([r["kept"] for r in g]).mean, 1),
                "kept fraction": fmt(estimate([r["kept_fraction"] for r in g]).mean, 3),
                "parse failure rate": fmt(estimate([r["parse_failure_rate"] for r in g]).mean, 3),
                "score histogram": _histogram_sum(r["score_histogram"] for r in g),
                "paper P / R": f"{paper[0]:.2f} / {paper[1]:.2f}" if paper else MISSING,
                "this project P / R": f"{fmt(p.mean)} / {fmt(rc.mean)}" if p.n or rc.n else MISSING,
                "runs": str(len(g)),
                "scale": scale,
            }
        )
    columns = [
        "iteration",
        "method",
        "threshold",
        "scoring",
        "kept",
        "kept fraction",
        "parse failure rate",
        "score histogram",
        "paper P / R",
        "this project P / R",
        "runs",
        "scale",
    ]
    return ReportTable(
        "curation",
        "Curation iterations - kept fraction, parse failures, score histogram",
        pd.DataFrame(lines, columns=columns),
        ["Means over runs; histograms summed. Paper P / R: HB's selection precision / recall vs human labels."],
    )


def seeds_table(runs: pd.DataFrame) -> ReportTable:
    """Mean ± 95% CI per setting over its seeds (``bft -m run.seed=0,1,2 ...``)."""
    from bft.report.seeds import seeds_table_frame

    return ReportTable(
        "seeds",
        "Settings over seeds - win rate mean ± 95% CI (t interval across seeds)",
        seeds_table_frame(runs),
        ["One line per setting (everything but run.seed) and judging (eval set, annotator, reference)."],
    )


def comparisons_table(runs: pd.DataFrame) -> ReportTable:
    """Paired differences between settings judged the same way, marked when within noise."""
    from bft.report.seeds import comparisons_frame

    return ReportTable(
        "comparisons",
        "Setting comparisons - paired on shared seeds and instructions",
        comparisons_frame(runs),
        [
            "A - B in win-rate points; 95% CI by paired bootstrap over (seed, instruction) pairs, or a t interval over "
            "per-seed win rates when judgements are not found; 'within noise' when the CI contains 0."
        ],
    )


def all_tables(runs: pd.DataFrame) -> list[ReportTable]:
    return [
        paper_table(runs, "table1"),
        paper_table(runs, "table2"),
        paper_table(runs, "table10"),
        not_comparable_table(runs),
        corpus_table(runs),
        seed_size_table(runs),
        rewriter_table(runs),
        data_scale_table(runs),
        curation_table(runs),
        seeds_table(runs),
        comparisons_table(runs),
    ]
