"""Write report tables as Markdown and CSV, and print them to the console."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from bft.report.tables import ReportTable


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (no extra dependency); an empty frame gives a one-line note."""
    if frame.empty:
        return "_no rows_\n"
    header = "| " + " | ".join(_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def markdown_section(table: ReportTable) -> str:
    notes = "".join(f"\n_{n}_\n" for n in table.notes)
    return f"## {table.title}\n\n{markdown_table(table.frame)}{notes}"


def write_report(tables: Sequence[ReportTable], out_dir: str | Path, preamble: str = "") -> list[Path]:
    """``report.md`` with every table, plus one ``<key>.csv`` and ``<key>.md`` per table; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for table in tables:
        csv_path, md_path = out / f"{table.key}.csv", out / f"{table.key}.md"
        table.frame.to_csv(csv_path, index=False)
        md_path.write_text(markdown_section(table))
        written += [csv_path, md_path]
    report = out / "report.md"
    report.write_text(
        "# bft report: the papers' figures beside this project's runs\n\n" + preamble + "\n".join(markdown_section(t) for t in tables)
    )
    return [report, *written]


def print_report(tables: Sequence[ReportTable], console: Console | None = None) -> None:
    """Rich tables on the console (or on ``console`` when given, e.g. a recording one)."""
    console = console or Console(width=200)
    for table in tables:
        rich_table = Table(title=table.title, title_justify="left")
        for column in table.frame.columns:
            rich_table.add_column(str(column), overflow="fold")
        for row in table.frame.itertuples(index=False):
            rich_table.add_row(*(str(v) for v in row))
        if table.frame.empty and len(table.frame.columns):
            rich_table.add_row("(no runs)", *[""] * (len(table.frame.columns) - 1))
        console.print(rich_table)
        for note in table.notes:
            console.print(f"  [dim]{note}[/dim]")
