"""Resolve the datasets given to ``bft-analyze`` (files, artifact/run folders, ``name=path``) into records.

Every record becomes ``{"instruction": str, "output": str}``; raw web documents (``text`` and no ``output``) get
an empty instruction and their text as the response, and the dataset is marked ``raw``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bft.data.io import read_records

# Looked for, in this order, inside a folder given as a dataset.
DATASET_FILES = ("generated.jsonl", "curated.jsonl", "train.jsonl", "candidates.jsonl", "seed.jsonl")
SUFFIXES = (".jsonl", ".json", ".parquet")


class InputError(ValueError):
    """A dataset argument that cannot be resolved or read; one line, says what to do."""


@dataclass
class Dataset:
    name: str
    path: Path
    records: list[dict[str, str]]
    n_total: int
    raw: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def instructions(self) -> list[str]:
        return [r["instruction"] for r in self.records]

    @property
    def outputs(self) -> list[str]:
        return [r["output"] for r in self.records]


def split_spec(spec: str) -> tuple[str | None, str]:
    """``name=path`` -> (name, path); a bare path (even one holding '=') -> (None, path)."""
    name, sep, rest = spec.partition("=")
    if sep and name and "/" not in name and not Path(spec).exists():
        return name, rest
    return None, spec


def resolve_dataset_file(path: str | Path) -> Path:
    """A file as is; a folder to its first ``DATASET_FILES`` entry, directly inside it or else below it."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    for name in DATASET_FILES:
        if (path / name).is_file():
            return path / name
    for name in DATASET_FILES:  # a run folder: artifacts live in sub-folders; take the newest match
        found = sorted(path.rglob(name), key=lambda p: (p.stat().st_mtime, str(p)))
        if found:
            return found[-1]
    raise InputError(f"{path}: folder holds none of {', '.join(DATASET_FILES)}; pass the dataset file itself")


def normalise_record(record: dict[str, Any]) -> tuple[dict[str, str], bool] | None:
    """-> (``{"instruction", "output"}``, is_raw) or None when the record has no usable text."""
    output = record.get("output")
    raw = False
    if not isinstance(output, str):
        output = record.get("text")
        raw = True
    if not isinstance(output, str) or not output.strip():
        return None
    instruction = record.get("instruction")
    if not isinstance(instruction, str):
        instruction = ""
    return {"instruction": instruction, "output": output}, raw and not instruction


def subsample(records: list[Any], max_records: int | None, seed: int = 0) -> list[Any]:
    """At most ``max_records`` records, chosen with a fixed seed and kept in file order."""
    if max_records is None or len(records) <= max_records:
        return list(records)
    keep = sorted(random.Random(seed).sample(range(len(records)), max_records))
    return [records[i] for i in keep]


def load_dataset(spec: str, max_records: int | None = 2000, seed: int = 0) -> Dataset:
    """Read one dataset argument into a :class:`Dataset` (subsampled to ``max_records``)."""
    label, raw_path = split_spec(spec)
    path = resolve_dataset_file(raw_path)
    if path.suffix not in SUFFIXES:
        raise InputError(f"{path}: expected a {'/'.join(SUFFIXES)} file")
    result = read_records(path, on_error="skip")
    rows: list[dict[str, str]] = []
    n_raw = 0
    for record in result.records:
        norm = normalise_record(record)
        if norm is None:
            continue
        rows.append(norm[0])
        n_raw += norm[1]
    if not rows:
        raise InputError(f"{path}: no record with a non-empty 'output' or 'text' field")
    if label is None:
        label = path.parent.name if path.name in DATASET_FILES and Path(raw_path).is_dir() else path.stem
    notes = []
    skipped = result.n_skipped + len(result.records) - len(rows)
    if skipped:
        notes.append(f"{skipped} unreadable or empty records skipped")
    sampled = subsample(rows, max_records, seed)
    if len(sampled) < len(rows):
        notes.append(f"subsampled {len(sampled)} of {len(rows)} records (seed {seed})")
    return Dataset(label, path, sampled, len(rows), raw=n_raw == len(rows), notes=notes)


def unique_names(datasets: list[Dataset]) -> list[Dataset]:
    """Suffix repeated names with -2, -3, ... so every dataset label is distinct."""
    seen: dict[str, int] = {}
    for ds in datasets:
        if ds.name in seen:
            seen[ds.name] += 1
            ds.name = f"{ds.name}-{seen[ds.name]}"
        else:
            seen[ds.name] = 1
    return datasets
