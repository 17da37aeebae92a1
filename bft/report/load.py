"""Load run summaries (``summary.json`` written by ``bft``) into a pandas DataFrame, one row per run.

Pure: reads files, writes nothing. ``run.*`` fields become plain columns (``method``, ``seed_size``, ...); the
top-level metrics keep their names; ``curation`` and ``stages`` stay as dict columns; ``summary_path`` and
``run_folder`` say where the row came from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

DEFAULT_RUN_DIRS: tuple[str, ...] = ("outputs", "multirun")
SUMMARY_NAME = "summary.json"

# Columns every frame has, also when no run was found, so that callers can filter without checking.
RUN_FIELDS: tuple[str, ...] = (
    "name",
    "method",
    "model",
    "seed_source",
    "seed_size",
    "corpus",
    "rewriter",
    "rewriter_mode",
    "curation_enabled",
    "curation_iterations",
    "curation_scoring",
    "curation_threshold",
    "max_generated",
    "baseline_file",
    "eval_set",
    "models",
    "corpus_bucket",
    "seed_tag",
    "web_tag",
    "inference_tag",
    "final_steps",
    "final_lr",
    "tags",
    "group",
    "run_dir",
    "seed",
)
METRIC_FIELDS: tuple[str, ...] = (
    "win_rate",
    "standard_error",
    "length_controlled_winrate",
    "discrete_win_rate",
    "n",
    "n_generated",
    "n_seed",
    "n_train_pairs",
    "target_generated",
    "shortfall",
    "annotator",
    "reference",
    "curated_dataset",
    "train_dataset",
    "final_model",
    "leaderboard",
    "wandb_dir",
    "judge_calibration",
    # the pairs the final model trained on and the data target (bft.pipeline.target): reached or short, and why
    "n_train_pairs",
    "target_generated",
    "shortfall",
    "documents_read",
    "target",
)
COLUMNS: tuple[str, ...] = (*RUN_FIELDS, *METRIC_FIELDS, "curation", "stages", "source", "summary_path", "run_folder")


def find_summaries(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``summary.json`` under the given folders (or the given files themselves), sorted, without duplicates."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if path.is_file() and path.name == SUMMARY_NAME:
            found.add(path.resolve())
        elif path.is_dir():
            found.update(p.resolve() for p in path.rglob(SUMMARY_NAME) if p.is_file())
    return sorted(found)


def flatten_summary(summary: Mapping[str, Any], source: str = "local", path: str | None = None) -> dict[str, Any]:
    """One report row from one summary dict (as in ``summary.json`` or a W&B run's summary)."""
    run = summary.get("run") or {}
    row: dict[str, Any] = {field: run.get(field) for field in RUN_FIELDS}
    row["tags"] = list(row["tags"] or [])
    for field in METRIC_FIELDS:
        row[field] = summary.get(field)
    row["curation"] = dict(summary.get("curation") or {})
    row["stages"] = dict(summary.get("stages") or {})
    row["source"] = source
    row["summary_path"] = path
    row["run_folder"] = str(Path(path).parent) if path else None
    return row


def read_summary(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A runs frame with the standard columns (empty frame when there are no rows)."""
    df = pd.DataFrame(list(rows), columns=list(COLUMNS))
    for column in ("win_rate", "standard_error", "length_controlled_winrate", "discrete_win_rate"):
        df[column] = pd.to_numeric(df[column], errors="coerce")
    return df


def load_runs(paths: Iterable[str | Path] = DEFAULT_RUN_DIRS) -> pd.DataFrame:
    """All runs under ``paths``; unreadable summaries are skipped with a warning row count kept in ``df.attrs``."""
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for path in find_summaries(paths):
        try:
            rows.append(flatten_summary(read_summary(path), source="local", path=str(path)))
        except (OSError, ValueError, AttributeError) as err:
            skipped.append(f"{path}: {err}")
    df = frame(rows)
    df.attrs["skipped"] = skipped
    return df
