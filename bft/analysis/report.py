"""Write the analysis: rich table on stdout, ``analysis.md`` / ``.csv`` / ``.json`` in the output folder."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# (row key, label) in display order; the table shows metrics as rows and datasets as columns.
METRICS: tuple[tuple[str, str], ...] = (
    ("kind", "kind"),
    ("n_records", "records analysed"),
    ("n_total", "records in file"),
    ("instr_unique_trigrams", "unique trigrams: instructions"),
    ("resp_unique_trigrams", "unique trigrams: responses"),
    ("instr_trigrams_per_1k", "unique instr. trigrams / 1k records"),
    ("resp_trigrams_per_1k", "unique resp. trigrams / 1k records"),
    ("instr_tokens_mean", "instruction tokens: mean"),
    ("instr_tokens_median", "instruction tokens: median"),
    ("resp_tokens_mean", "response tokens: mean"),
    ("resp_tokens_median", "response tokens: median"),
    ("instr_chars_mean", "instruction chars: mean"),
    ("instr_chars_median", "instruction chars: median"),
    ("resp_chars_mean", "response chars: mean"),
    ("resp_chars_median", "response chars: median"),
    ("mauve", "MAUVE vs reference"),
    ("mauve_note", "MAUVE note"),
    ("overlap_exact", "eval overlap: exact"),
    ("overlap_ngram", "eval overlap: n-gram"),
    ("overlap_embedding", "eval overlap: embedding"),
    ("overlap_total", "eval overlap: total"),
    ("notes", "notes"),
)


def fmt(value: Any, key: str = "") -> str:
    """Human-readable cell: None -> '-', MAUVE to 4 decimals, other floats to 1."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if key == "mauve" else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Transposed table body: one line per metric, one column per dataset."""
    return [[label, *(fmt(r.get(key), key) for r in rows)] for key, label in METRICS]


def to_markdown(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], images: Mapping[str, str]) -> str:
    header = ["metric", *(r["dataset"] for r in rows)]
    lines = ["# Dataset analysis", ""]
    lines.append(
        f"MAUVE reference: **{meta.get('mauve_reference')}** ({meta.get('features')} features); "
        f"eval instructions checked: {meta.get('eval_instructions') if meta.get('eval_instructions') is not None else 'none'}."
    )
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for body in table_rows(rows):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in body) + " |")
    lines += ["", "Files:", ""] + [f"- `{r['dataset']}`: `{r['path']}`" for r in rows]
    for title, name in images.items():
        lines += ["", f"## {title}", "", f"![{title}]({name})"]
    return "\n".join(lines) + "\n"


def write_outputs(
    rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], out_dir: Path, images: Mapping[str, str]
) -> dict[str, Path]:
    """Write analysis.md/.csv/.json into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "analysis.md", "csv": out_dir / "analysis.csv", "json": out_dir / "analysis.json"}
    paths["md"].write_text(to_markdown(rows, meta, images), encoding="utf-8")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    payload = {"meta": dict(meta), "images": dict(images), "datasets": list(rows)}
    paths["json"].write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths


def print_table(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(120, 40 + 26 * len(rows)))
    table = Table(title=f"bft-analyze (MAUVE reference: {meta.get('mauve_reference')}, {meta.get('features')} features)")
    table.add_column("metric", style="bold")
    for r in rows:
        table.add_column(str(r["dataset"]), justify="right", overflow="fold")
    for body in table_rows(rows):
        table.add_row(*body)
    console.print(table)
