"""The report's data-target table: for every run with ``data.max_generated``, the pairs it reached, the documents
it read and, when it stayed short, why (``target`` in summary.json, written by ``bft.pipeline.target``).

A run short of its target trained on fewer generated pairs than its setting names; this table states it next to
the papers' tables instead of leaving it to be found in the run folder.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bft.pipeline.target import shortfall_line
from bft.report.aggregate import MISSING, is_missing
from bft.report.tables import ReportTable


def _int(value: Any) -> str:
    return MISSING if is_missing(value) else f"{int(value):,}"


def target_rows(runs: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for run in runs.to_dict("records"):
        target = run.get("target") if isinstance(run.get("target"), dict) else None
        if target is None:
            continue
        rows.append(
            {
                "run": run.get("run_folder") or run.get("name") or MISSING,
                "method": run.get("method") or MISSING,
                "target": _int(target.get("target_generated")),
                "reached": _int(target.get("reached")),
                "short by": _int(target.get("shortfall")),
                "documents read": _int(target.get("documents_read")),
                "train pairs": _int(run.get("n_train_pairs")),
                "why short": target.get("reason") or "",
                "_line": shortfall_line(target),
            }
        )
    return rows


def data_target_table(runs: pd.DataFrame) -> ReportTable:
    """One row per run with a data target; a note per run that stayed short (its one line)."""
    rows = target_rows(runs)
    notes = [r["_line"] for r in rows if r["short by"] not in ("0", MISSING)]
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "_line"} for r in rows])
    if frame.empty:
        frame = pd.DataFrame(columns=["run", "method", "target", "reached", "short by", "documents read", "train pairs", "why short"])
    title = "Data targets (data.max_generated): pairs reached, documents read"
    return ReportTable("data_targets", title, frame, notes)
