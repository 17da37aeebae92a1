"""What each corpus filter removed, read from the corpus stage's ``filters.json`` (``bft-analyze corpus PATH``).

``PATH`` is the ``filters.json`` file, the corpus artifact folder holding it, or a run folder whose
``summary.json`` names it (``corpus_filters.file``). The run summary uses :func:`removals_text` for its one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FILTERS_FILE = "filters.json"
SUMMARY_FILE = "summary.json"


class FilterReportError(ValueError):
    """A path that holds no readable corpus filter report; one line, says what to pass instead."""


def find_filters_file(path: str | Path) -> Path:
    """``filters.json`` itself, inside an artifact folder, or named by a run folder's ``summary.json``."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise FilterReportError(f"{path}: no such file or folder")
    if (path / FILTERS_FILE).is_file():
        return path / FILTERS_FILE
    if (path / SUMMARY_FILE).is_file():
        named = (read_json(path / SUMMARY_FILE).get("corpus_filters") or {}).get("file")
        if named and Path(named).is_file():
            return Path(named)
        raise FilterReportError(f"{path / SUMMARY_FILE}: the run has no corpus filter report (no corpus stage, or an older run)")
    raise FilterReportError(f"{path}: holds neither {FILTERS_FILE} nor {SUMMARY_FILE}; pass the corpus artifact folder")


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FilterReportError(f"{path}: unreadable JSON ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise FilterReportError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_report(path: str | Path) -> dict[str, Any]:
    """The filter report at ``path`` (see :func:`find_filters_file`), checked to hold a ``filters`` list."""
    file = find_filters_file(path)
    report = read_json(file)
    filters = report.get("filters")
    if not isinstance(filters, list) or not all(isinstance(f, dict) and "filter" in f for f in filters):
        raise FilterReportError(f"{file}: key 'filters' must be a list of objects with a 'filter' name")
    return {**report, "file": str(file)}


def removals(report: Mapping[str, Any]) -> dict[str, Any]:
    """The compact accounting the run summary keeps: documents in and kept, removed count per filter, the file."""
    counts = report.get("counts", {})
    return {
        "in": counts.get("input"),
        "kept": counts.get("kept"),
        "removed": {f["filter"]: f.get("removed", 0) for f in report["filters"]},
        "file": report.get("file"),
    }


def removals_text(summary: Mapping[str, Any]) -> str:
    """One line: ``corpus filters: 80 in, 76 kept; removed clean 1, language 0, near_duplicate 3``."""
    removed = ", ".join(f"{name} {n}" for name, n in summary["removed"].items()) or "nothing"
    return f"corpus filters: {summary['in']} in, {summary['kept']} kept; removed {removed}"


def _reasons_text(reasons: Mapping[str, int]) -> str:
    return ", ".join(f"{r} {n}" for r, n in reasons.items() if n) or "-"


def print_report(report: Mapping[str, Any], examples: int = 3, console: Any = None) -> None:
    """The per-filter table (input, removed, share, reasons), then up to ``examples`` removed texts per filter."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console(width=120)
    counts = report.get("counts", {})
    table = Table(title=f"corpus filters: {report.get('source', '?')} ({counts.get('input')} in, {counts.get('kept')} kept)")
    for column, justify in (("filter", "left"), ("in", "right"), ("removed", "right"), ("share", "right"), ("reasons", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for entry in report["filters"]:
        n_in, removed = entry.get("in") or 0, entry.get("removed") or 0
        share = f"{removed / n_in:.1%}" if n_in else "-"
        table.add_row(entry["filter"], str(n_in), str(removed), share, _reasons_text(entry.get("reasons", {})))
    console.print(table)
    if report.get("skipped_input"):
        console.print(f"skipped input records: {_reasons_text(report['skipped_input'])}")
    for entry in report["filters"]:
        shown = entry.get("examples", [])[:examples]
        if not shown:
            continue
        console.print(f"[bold]{escape(entry['filter'])}[/bold] removed, e.g.:")
        for ex in shown:
            text = " ".join(str(ex.get("text", "")).split())
            console.print("  " + escape(f"[{ex.get('reason')}] {ex.get('id')}: {text}"), soft_wrap=True)
    console.print(f"report: {report.get('file')}")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bft-analyze corpus",
        description="Show what each corpus filter removed (counts by reason, removed examples) from filters.json.",
    )
    parser.add_argument("path", help="filters.json, the corpus artifact folder, or a run folder (its summary.json)")
    parser.add_argument("--examples", type=int, default=3, help="removed examples shown per filter (default 3; 0 = none)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    args = parser.parse_args(argv)
    try:
        report = load_report(args.path)
    except FilterReportError as err:
        print(f"bft-analyze corpus: {err}", file=sys.stderr, flush=True)
        return 2
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_report(report, examples=max(0, args.examples))
    return 0
