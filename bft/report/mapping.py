"""Which paper row, table and scale a run belongs to. Pure functions of a run's fields."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bft.eval.paper_rows import AE1_ANNOTATORS, AE2_ANNOTATORS

TABLE_TAGS: tuple[str, ...] = ("table1", "table2", "table10")

# Method -> the data recipe it reproduces (BFT's naming).
METHOD_RECIPES: dict[str, str] = {
    "filter_only": "filtering",
    "rewrite_only": "rewriting",
    "backandforth": "filtering + rewriting",
    "distill": "filtering + distilling",
    "humpback": "ClueWeb + filtering",
}

# baseline_file name fragment -> BFT baseline row (first match wins, checked in this order).
BASELINE_ROWS: tuple[tuple[str, str], ...] = (
    ("orca", "Open Orca"),
    ("sharegpt", "ShareGPT"),
    ("evol", "Evol-Instruct"),
    ("alpaca", "Alpaca-GPT4"),
    ("self", "Self-instruct"),
)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def recipe(method: str | None, baseline_file: str | None = None) -> str | None:
    """The data recipe of a run: 'filtering + rewriting', 'Open Orca', ... (None when unknown)."""
    if method == "baseline_dataset":
        if _missing(baseline_file):
            return None
        name = str(baseline_file).lower().replace("-", "").replace("_", "")
        return next((row for key, row in BASELINE_ROWS if key in name), None)
    return METHOD_RECIPES.get(method or "")


def _size_suffix(max_generated: Any, default: str) -> str:
    return " 25.6K" if not _missing(max_generated) and int(max_generated) == 25600 else default


def paper_row_label(table: str, method: str | None, baseline_file: str | None = None, max_generated: Any = None) -> str | None:
    """The ``data`` label of the row of ``table`` a run reproduces, or None when it has no recipe.

    A recipe that the table lacks (e.g. distilling in Table 1) still gets a label, with no paper figure behind it.
    Table 2 and 10 distinguish the 25.6K runs (``data.max_generated=25600``) from the full-size ones.
    """
    data = recipe(method, baseline_file)
    if data is None:
        return None
    if method == "baseline_dataset":
        return data
    if table == "table1":
        return "ClueWeb + filtering (Humpback data)" if method == "humpback" else f"Dolma + {data}"
    if table == "table2":
        if method == "humpback":
            return "ClueWeb + filtering 41.8K"
        if method == "distill":
            return "Dolma + filtering + distilling 25.6K"
        if method == "backandforth":
            return "Dolma + filtering + rewriting" + _size_suffix(max_generated, " 51.2K")
        return f"Dolma + {data} 51.2K"
    if table == "table10":
        if method == "humpback":
            return "ClueWeb + filtering"
        if method == "distill":
            return "filtering + distilling 25.6K"
        if method == "backandforth" and _size_suffix(max_generated, "") == " 25.6K":
            return "filtering + rewriting 25.6K"
        return f"Dolma + {data}"
    raise ValueError(f"unknown table {table!r}; expected one of {TABLE_TAGS}")


def tables_for(tags: Sequence[str] | None, model: str | None, annotator: str | None) -> tuple[str, ...]:
    """The paper tables a run is compared with: its table tags, else by judge and model size."""
    explicit = tuple(t for t in TABLE_TAGS if t in (tags or ()))
    if explicit:
        return explicit
    if annotator in AE2_ANNOTATORS:
        return ("table10",)
    return ("table2",) if "70b" in (model or "").lower() else ("table1",)


LOCAL_MODELS = ("smollm2_135m", "tiny")


def scale_of(tags: Sequence[str] | None, model: str | None = None) -> str:
    """'paper' or 'local' from the run's tags; untagged runs of the embedded models are 'local' ('?' otherwise)."""
    tags = tags or ()
    if "paper" in tags:
        return "paper"
    if "local" in tags or model in LOCAL_MODELS:
        return "local"
    return "?"


# What a run must have been judged on to sit beside a paper table's rows: eval set, annotators, base-model size.
PAPER_JUDGING: dict[str, tuple[str, tuple[str, ...], str]] = {
    "table1": ("ae1", AE1_ANNOTATORS, "7b"),
    "table2": ("ae1", AE1_ANNOTATORS, "70b"),
    "table10": ("ae2", AE2_ANNOTATORS, "70b"),
}
OFFICIAL_REFERENCE = "dataset"  # the eval set's own reference outputs (text_davinci_003 / gpt4_1106_preview)


def _model_size(model: str | None) -> str | None:
    name = (model or "").lower().replace("-", "_")
    for size in ("70b", "65b", "33b", "13b", "7b"):
        if f"_{size}" in name or name.endswith(size) or f"{size}_" in name:
            return size
    return None


def comparability_reason(run: Mapping[str, Any], table: str) -> str | None:
    """Why a run's figure cannot sit beside ``table``'s paper rows (None when eval set, judge, reference and setting match)."""
    eval_set, annotators, size = PAPER_JUDGING[table]
    reasons = []
    if run.get("eval_set") != eval_set:
        reasons.append(f"eval set {run.get('eval_set') or '?'} (paper: {eval_set}, 805 instructions)")
    if run.get("annotator") not in annotators:
        reasons.append(f"judge {run.get('annotator') or '?'} (paper: {', '.join(annotators)})")
    if run.get("reference") != OFFICIAL_REFERENCE:
        reasons.append(f"reference {run.get('reference') or '?'} (paper: the set's own reference outputs)")
    if scale_of(run.get("tags"), run.get("model")) != "paper":
        reasons.append("not a paper-scale setting (no 'paper' tag)")
    if _model_size(run.get("model")) != size:
        reasons.append(f"model {run.get('model') or '?'} (paper: Llama-2-{size.upper()})")
    return "; ".join(reasons) or None


def corpus_row(corpus: str | None) -> str | None:
    """The corpus-ablation row of a corpus source ('allenai/c4' -> 'C4'); None for corpora the paper did not test."""
    name = (corpus or "").lower()
    if "c4" in name:
        return "C4"
    if "dolma" in name:
        return "Dolma middle" if "middle" in name else "Dolma head"
    if "clueweb" in name:
        return "ClueWeb"
    return None
