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

from bft.eval.paper_rows import SETTING_NAMES, PaperRow
from bft.report.aggregate import MISSING, Estimate, estimate, fmt, is_missing
from bft.report.mapping import CORE_SETTINGS, SETTING_LABELS, Placement, pairs, place, run_settings, scale_of
from bft.report.paper_tables import AE2_TABLES, HB_SCALING_ALPHA, HB_SELECTION_QUALITY, TABLE_TITLES, table_of, table_rows

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


# --- the papers' tables: BFT Tables 1, 2, 10, the corpus ablation, HB Table 4 and HB's headline -------------

# Settings that are not part of any paper row but split one row's runs into separately shown groups.
VARIANT_FIELDS: tuple[str, ...] = (
    "seed_source",
    "rewriter",
    "rewriter_mode",
    "curation_scoring",
    "curation_threshold",
    "curation_iterations",
    "final_lr",
    "final_steps",
    "train_tags",
    "inference_tag",
)
FIRST_COLUMN = {"corpus_ablation": "corpus", "hb_table4": "tags (training; inference)"}


def placements(runs: pd.DataFrame) -> list[tuple[dict[str, Any], Placement]]:
    """Every run with where it goes: beside the paper rows whose settings all match, or not comparable."""
    return [(r, place(r)) for r in _records(runs)]


def _variant_value(run: Mapping[str, Any], name: str) -> Any:
    if name in ("train_tags", "inference_tag"):
        return run_settings(run)[name]
    value = run.get(name)
    return None if is_missing(value) else value


def _variant_fields(row: PaperRow) -> tuple[str, ...]:
    declared = {n for n in SETTING_NAMES if getattr(row.settings, n) is not None}
    skip = declared | ({"final_steps"} if row.selection else set())
    return tuple(f for f in VARIANT_FIELDS if f not in skip)


def _variant_labels(groups: Mapping[tuple[Any, ...], Any], names: tuple[str, ...]) -> dict[tuple[Any, ...], str]:
    """Each group's values of the fields that differ between the groups ('all matching runs' when only one)."""
    varying = [i for i, _ in enumerate(names) if len({k[i] for k in groups}) > 1]
    if not varying:
        return {k: "all matching runs" for k in groups}
    return {k: ", ".join(f"{names[i]}={'?' if k[i] is None else k[i]}" for i in varying) for k in groups}


def pairs_cell(group: Iterable[Mapping[str, Any]]) -> str:
    """The pairs the runs trained on ('12,800 generated + 3,200 seed'), with any shortfall of their target."""
    labels = list(dict.fromkeys(pairs(r).label for r in group))
    return "; ".join(labels) if labels else MISSING


def best_of_steps(group: list[dict[str, Any]], row: PaperRow) -> tuple[list[dict[str, Any]], str]:
    """The runs of the best final-model step count (mean win rate over its runs) and the selection, stated."""
    by_steps = _group(group, lambda r: _variant_value(r, "final_steps"))
    scored = {steps: _est(g) for steps, g in by_steps.items() if _est(g).mean is not None}
    if not scored:
        return group, f"{row.selection} (no win rate yet)"
    best = max(scored, key=lambda steps: scored[steps].mean)  # type: ignore[arg-type, return-value]
    shown = ", ".join(
        f"{'?' if steps is None else steps}: {fmt(e.mean)}{' (best)' if steps == best else ''}"
        for steps, e in sorted(scored.items(), key=lambda kv: _sort_key(kv[0]))
    )
    return by_steps[best], f"best of {len(scored)} step count(s) run ({shown}); paper: {row.selection}"


def _unchecked_note(rows: Iterable[PaperRow]) -> str | None:
    unchecked = sorted(
        {SETTING_LABELS[n] for r in rows for n in CORE_SETTINGS if getattr(r.settings, n) is None},
        key=list(SETTING_LABELS.values()).index,
    )
    if not unchecked:
        return None
    return f"Not checked (not stated by the paper for some rows, or not applicable to them): {', '.join(unchecked)}."


def paper_table(runs: pd.DataFrame, table: str, placed: list[tuple[dict[str, Any], Placement]] | None = None) -> ReportTable:
    """One paper table: each row's figure beside the runs whose settings all match it ("—" when none ran)."""
    placed = placements(runs) if placed is None else placed
    rows = table_rows(table)
    first = FIRST_COLUMN.get(table, "data")
    lines: list[dict[str, str]] = []
    for row in rows:
        matched = [r for r, p in placed if row in p.rows]
        names = _variant_fields(row)
        groups = _group(matched, lambda r, names=names: tuple(_variant_value(r, n) for n in names)) or {(): []}
        labels = _variant_labels(groups, names) if matched else {(): MISSING}
        for key, group in groups.items():
            shown, selection = best_of_steps(group, row) if row.selection and group else (group, row.selection or MISSING)
            line = {first: row.data}
            if table in AE2_TABLES:
                lc, raw = _est(shown, "length_controlled_winrate"), _est(shown)
                line |= {
                    "paper LC": fmt(row.ae2_lc_win_rate),
                    "paper raw": fmt(row.ae2_win_rate),
                    "this project LC": fmt(lc.mean),
                    "this project raw": fmt(raw.mean),
                    "SE (raw)": fmt(raw.se),
                    "runs": str(max(lc.n, raw.n)),
                }
            else:
                line |= {"paper": fmt(row.ae1_win_rate)}
                if table == "hb_table4":
                    line |= {"paper SE": fmt(row.ae1_se)}
                line |= _ours(_est(shown))
            line |= {"pairs": pairs_cell(shown), "variant": labels[key]}
            if any(r.selection for r in rows):
                line |= {"selection": selection}
            lines.append(line)
    notes = [
        "A run sits beside a row only when every setting the row declares matches (method, generated pairs, seed pairs, "
        "corpus, model size, eval set, judge, reference, and the tags where the table varies them); other runs are "
        "in the 'not comparable' table with the first setting that differs.",
        "this project: mean over matching runs; SE: across runs when runs >= 2, else the run's AlpacaEval SE.",
    ]
    if any(r.selection for r in rows):
        notes.append(
            "selection: the paper reports the best of three final-model step counts; this project shows, per variant, "
            "the step count with the best mean win rate over its runs, and the others beside it."
        )
    if _unchecked_note(rows):
        notes.append(_unchecked_note(rows))  # type: ignore[arg-type]
    return ReportTable(table, TABLE_TITLES[table], pd.DataFrame(lines), notes)


def corpus_table(runs: pd.DataFrame, placed: list[tuple[dict[str, Any], Placement]] | None = None) -> ReportTable:
    """BFT's corpus ablation (3.2K pairs, 7B, filtering) beside the runs whose settings all match a corpus row."""
    table = paper_table(runs, "corpus_ablation", placed)
    table.notes.append("Dolma is 'Dolma head' or 'Dolma middle' by the run's corpus.perplexity_bucket (else by the name).")
    return table


NOT_COMPARABLE_COLUMNS = [
    "run",
    "pairs",
    "nearest paper row",
    "table",
    "win rate",
    "SE",
    "LC",
    "judging",
    "first mismatch",
    "also differs",
]


def not_comparable_table(runs: pd.DataFrame, placed: list[tuple[dict[str, Any], Placement]] | None = None) -> ReportTable:
    """Runs that sit beside no paper row: their nearest row (same method) and the first setting that differs."""
    placed = placements(runs) if placed is None else placed
    lines, unmatched = [], 0
    for r, p in placed:
        if p.comparable:
            continue
        if p.nearest is None:
            unmatched += 1
            continue
        lines.append(
            {
                "run": str(r.get("name") or "?"),
                "pairs": pairs(r).label,
                "nearest paper row": p.nearest.data,
                "table": TABLE_TITLES[table_of(p.nearest)].split(" - ")[0],
                "win rate": fmt(r.get("win_rate")),
                "SE": fmt(r.get("standard_error")),
                "LC": fmt(r.get("length_controlled_winrate")),
                "judging": f"{r.get('eval_set') or '?'} / {r.get('annotator') or '?'} / ref {r.get('reference') or '?'}",
                "first mismatch": str(p.why_not[0]),
                "also differs": ", ".join(SETTING_LABELS[m.setting] for m in p.why_not[1:]) or MISSING,
            }
        )
    notes = [
        "A paper row is placed beside a run only when every setting it declares matches; the nearest row is the one of "
        "the run's method with the fewest settings that differ. Length-controlled win rates exist only for the 805 "
        "official instructions in the official order."
    ]
    if unmatched:
        notes.append(f"{unmatched} run(s) have a method no paper row has (unknown method or baseline file): not listed.")
    return ReportTable(
        "not_comparable",
        "Runs not comparable with the papers' tables (a setting that defines the paper row differs)",
        pd.DataFrame(lines, columns=NOT_COMPARABLE_COLUMNS),
        notes,
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
    placed = placements(runs)
    return [
        paper_table(runs, "table1", placed),
        paper_table(runs, "table2", placed),
        paper_table(runs, "table10", placed),
        corpus_table(runs, placed),
        paper_table(runs, "hb_table4", placed),
        paper_table(runs, "hb_headline", placed),
        not_comparable_table(runs, placed),
        seed_size_table(runs),
        rewriter_table(runs),
        data_scale_table(runs),
        curation_table(runs),
        seeds_table(runs),
        comparisons_table(runs),
    ]
