"""The curated, generated and training sets of a run as Parquet files that ``datasets`` loads, one config each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bft.artifacts.store import Artifact

# config name -> (stage, file): what each exported config holds
SETS: dict[str, tuple[str, str]] = {
    "curated": ("curate", "curated.jsonl"),  # (instruction, web document) pairs the judge kept, with scores
    "generated": ("rewrite", "generated.jsonl"),  # the kept pairs with the rewritten answer in `output`
    "baseline": ("baseline_data", "generated.jsonl"),  # a baseline run's given instruction data
    "train": ("train_data", "train.jsonl"),  # the final model's training set: seed + generated, tagged, decontaminated
}


def _records(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """Nested values (raw judge outputs) as JSON text: one column type per column, whatever each row holds."""
    return {k: json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v for k, v in record.items()}


def write_sets(artifacts: dict[str, Artifact], out: Path) -> dict[str, dict[str, Any]]:
    """Write ``<out>/<config>.parquet`` for each set the run has; return rows and columns per config."""
    from datasets import Dataset

    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, Any]] = {}
    for name, (stage, file) in SETS.items():
        artifact = artifacts.get(stage)
        if artifact is None or not (artifact.path / file).is_file():
            continue
        rows = [_flat(r) for r in _records(artifact.path / file)]
        if not rows:
            continue
        columns = list(dict.fromkeys(k for r in rows for k in r))
        dataset = Dataset.from_list([{c: r.get(c) for c in columns} for r in rows])
        dataset.to_parquet(str(out / f"{name}.parquet"))
        written[name] = {"rows": len(rows), "columns": columns, "stage": stage, "key": artifact.key}
    return written
