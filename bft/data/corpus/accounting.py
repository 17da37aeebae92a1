"""What each corpus filter removed: datatrove's per-step stats turned into counts, plus a few removed examples.

Every filter gets an :class:`ExampleWriter` as its exclusion writer: it keeps the first few removed documents per
reason and task (nothing more is written, so removal does not cost disk), and :func:`filter_report` gathers them
in task order into ``filters.json``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.writers import JsonlWriter

EXAMPLE_CHARS = 300
# bft's own reasons, counted at the top level of the stage counts as before the datatrove engine.
BFT_REASONS = ("empty", "symbol_ratio", "caps_lines", "short_lines", "too_short", "too_long", "near_duplicate")


class ExampleWriter(JsonlWriter):
    """An exclusion writer that keeps only the first ``per_reason`` removed documents of each reason per task."""

    name = "removed examples"

    def __init__(self, folder: str, per_reason: int) -> None:
        super().__init__(folder, output_filename="${rank}.jsonl", compression=None)
        self.per_reason = per_reason
        self._seen: Counter[str] = Counter()

    def write(self, document: Document, rank: int = 0, **kwargs: Any) -> None:
        reason = str(document.metadata.get("filter_reason") or "removed")
        self._seen[reason] += 1
        if self._seen[reason] <= self.per_reason:
            super().write(document, rank, **kwargs)


def read_stats(logging_dir: str) -> list[dict[str, Any]]:
    """datatrove's stats of one executor summed over its tasks' own files (``stats/<rank>.json``, which also
    survive a resumed run where finished tasks are skipped): one ``{name, stats}`` per pipeline step, in order."""
    from datatrove.utils.stats import PipelineStats

    total = PipelineStats()
    for path in sorted(Path(logging_dir, "stats").glob("*.json")):
        total = total + PipelineStats.from_json(json.loads(path.read_text(encoding="utf-8")))
    return json.loads(total.to_json())


def stat_total(step_stats: dict[str, Any], key: str) -> int:
    value = step_stats.get("stats", {}).get(key)
    if value is None:
        return 0
    return int(value["total"] if isinstance(value, dict) else value)


def reasons_of(step_stats: dict[str, Any]) -> dict[str, int]:
    """``{reason: count}`` of a filter step (datatrove's ``dropped_<reason>`` stats)."""
    found = {}
    for key in step_stats.get("stats", {}):
        if key.startswith("dropped_"):
            found[key.removeprefix("dropped_")] = stat_total(step_stats, key)
    return dict(sorted(found.items()))


def examples_of(folder: Path, tasks: int, per_reason: int) -> list[dict[str, Any]]:
    """The first ``per_reason`` removed documents of each reason, in task order, text cut to EXAMPLE_CHARS."""
    examples: list[dict[str, Any]] = []
    taken: Counter[str] = Counter()
    for rank in range(tasks):
        path = folder / f"{rank:05d}.jsonl"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            meta = row.get("metadata", {})
            reason = str(meta.get("filter_reason") or "near_duplicate")
            if taken[reason] >= per_reason:
                continue
            taken[reason] += 1
            text = row.get("text", "")
            examples.append(
                {
                    "id": str(row.get("id")),
                    "reason": reason,
                    "text": text[:EXAMPLE_CHARS] + ("..." if len(text) > EXAMPLE_CHARS else ""),
                    "url": meta.get("url", ""),
                }
            )
    return examples


def filter_entry(label: str, step_stats: dict[str, Any], examples: list[dict[str, Any]]) -> dict[str, Any]:
    reasons = reasons_of(step_stats)
    removed = stat_total(step_stats, "dropped")
    return {
        "filter": label,
        "step": step_stats.get("name", label),
        "in": stat_total(step_stats, "total"),
        "removed": removed,
        "reasons": reasons or ({label: removed} if removed else {}),
        "examples": examples,
    }


def stage_counts(entries: list[dict[str, Any]], reader: dict[str, Any], extra: dict[str, int]) -> dict[str, Any]:
    """The stage's counts: ``input``, bft's reasons at the top level (as before), every other filter by name."""
    counts: dict[str, Any] = {reason: 0 for reason in BFT_REASONS}
    counts["input"] = stat_total(reader, "documents")
    for entry in entries:
        if entry["filter"] in ("clean", "length", "near_duplicate"):
            for reason, n in entry["reasons"].items():
                counts[reason] = counts.get(reason, 0) + n
            if entry["filter"] == "near_duplicate":
                counts["near_duplicate"] = entry["removed"]
        else:
            counts[entry["filter"]] = entry["removed"]
    counts.update(extra)
    return counts


def skipped_input(reader: dict[str, Any]) -> dict[str, int]:
    """Input records skipped with ``data.on_error=skip``, by reason."""
    return {
        key.removeprefix("skipped_"): stat_total(reader, key) for key in sorted(reader.get("stats", {})) if key.startswith("skipped_")
    }
