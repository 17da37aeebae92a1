"""Seed (instruction, output) pairs: the embedded set, a local file, or OASST1 first turns read from the hub
repository's data files (``seed.hub_files``: the train split's Parquet file) or a local ``seed.mirror`` of them."""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from bft.config.schema import SeedConfig
from bft.data.embedded import embedded_file
from bft.data.io import DataError, check_on_error, collect_records, read_records
from bft.data.remote import hub_glob

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
OASST = "oasst1"
OASST_HELD_OUT = "validation"  # never read: its English first prompts are AlpacaEval's ``oasst`` subset


def stable_id(prefix: str, instruction: str, output: str) -> str:
    """A content-derived id: ``prefix-<12 hex of sha1(instruction, output)>``."""
    digest = hashlib.sha1(f"{instruction}\x1f{output}".encode()).hexdigest()[:12]
    return f"{prefix}-{digest}"


def assign_ids(records: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Give every record without an ``id`` a stable content id (``-2``, ``-3`` suffixes on collisions)."""
    used = {str(r["id"]) for r in records if r.get("id") is not None}
    out = []
    for record in records:
        record = dict(record)
        if record.get("id") is None:
            base = stable_id(prefix, record["instruction"], record["output"])
            candidate, n = base, 1
            while candidate in used:
                n += 1
                candidate = f"{base}-{n}"
            record["id"] = candidate
        record["id"] = str(record["id"])
        used.add(record["id"])
        out.append(record)
    return out


def subsample(records: list[dict[str, Any]], size: int | None, seed: int) -> list[dict[str, Any]]:
    """``size`` records drawn with ``random.Random(seed)``, kept in their original order; all if ``size`` is None."""
    if size is None:
        return list(records)
    if size < 0 or size > len(records):
        raise DataError("seed", f"size {size} is larger than the {len(records)} available pairs", "too_large")
    picked = sorted(random.Random(seed).sample(range(len(records)), size))
    return [records[i] for i in picked]


def oasst_first_turn_pairs(rows: Iterable[Mapping[str, Any]], language: str = "en") -> list[dict[str, Any]]:
    """First-turn pairs from OASST-style message rows: a prompter root (``parent_id`` None) in ``language``
    and its assistant reply with ``rank == 0``. Deleted or review-rejected messages are ignored.
    """
    roots: dict[str, Mapping[str, Any]] = {}
    best_reply: dict[str, Mapping[str, Any]] = {}
    replies: list[Mapping[str, Any]] = []
    for row in rows:
        if row.get("deleted") or row.get("review_result") is False:
            continue
        if row.get("role") == "prompter" and row.get("parent_id") is None and row.get("lang") == language:
            roots[row["message_id"]] = row
        elif row.get("role") == "assistant" and row.get("rank") == 0:
            replies.append(row)
    for reply in replies:
        parent = reply.get("parent_id")
        if parent in roots and parent not in best_reply and reply.get("lang", language) == language:
            best_reply[parent] = reply
    pairs = []
    for root_id, root in roots.items():
        reply = best_reply.get(root_id)
        if reply is None or not str(root.get("text", "")).strip() or not str(reply.get("text", "")).strip():
            continue
        pairs.append(
            {
                "id": f"oasst1-{root_id}",
                "instruction": root["text"].strip(),
                "output": reply["text"].strip(),
                "source": OASST,
                "message_tree_id": root.get("message_tree_id", root_id),
            }
        )
    return pairs


def _local_oasst_rows(path: Path, on_error: str) -> list[dict[str, Any]]:
    """Message rows of a local file in the hub's format (one oasst1 message per JSONL line / JSON item / row)."""
    required = {"message_id": str, "role": str, "text": str}
    result = read_records(path, required=required, id_field="message_id", on_error=on_error)
    if result.skipped:
        log.warning("%s: skipped %d oasst1 message rows %s", path, result.n_skipped, result.skipped)
    return result.records


def oasst_files(cfg: SeedConfig) -> list[Path]:
    """Local paths of the data files ``cfg.hub_files`` of ``cfg.hub_dataset``: in ``cfg.mirror`` (a copy of the
    repository), else downloaded from the hub into its cache (``hf://datasets/<id>/<hub_files>``); no loading script."""
    folder, files = hub_glob(cfg.hub_dataset, cfg.hub_files, cfg.mirror, "seed.hub_files", "seed.mirror")
    held_out = [name for name in files if OASST_HELD_OUT in os.path.basename(name)]
    if held_out:
        raise DataError("seed.hub_files", f"{held_out[0]} is oasst1's {OASST_HELD_OUT} split (AlpacaEval's oasst subset)", "config")
    if cfg.mirror:
        return [Path(folder) / name for name in files]
    from huggingface_hub import hf_hub_download

    paths = []
    for name in files:
        try:
            paths.append(Path(hf_hub_download(cfg.hub_dataset, name, repo_type="dataset")))
        except Exception as err:  # network, gated repository, offline without the file in the cache
            raise DataError(
                "seed.hub_dataset", f"cannot download {name} of {cfg.hub_dataset} ({type(err).__name__})", "not_found"
            ) from None
    return paths


def _load_oasst(cfg: SeedConfig, on_error: str = "raise") -> list[dict[str, Any]]:
    """First-turn pairs of ``cfg.hub_dataset``: its data files ``cfg.hub_files`` (the train split), from the hub or
    ``cfg.mirror``; or a local .jsonl/.json(.gz)/.parquet file of message rows in the same format (the small files
    of the paper smoke tests)."""
    local = Path(cfg.hub_dataset).expanduser()
    if local.is_file():
        rows: list[dict[str, Any]] = _local_oasst_rows(local, on_error)
    else:
        rows = [row for path in oasst_files(cfg) for row in _local_oasst_rows(path, on_error)]
    pairs = oasst_first_turn_pairs(rows, language=cfg.language)
    log.info("oasst1 %s (%s): %d first-turn rank-0 %s pairs", cfg.hub_dataset, cfg.hub_files, len(pairs), cfg.language)
    return pairs


def _load_file(path: Path, cfg: SeedConfig, on_error: str, source: str) -> list[dict[str, Any]]:
    required = {cfg.instruction_field: str, cfg.output_field: str}
    result = read_records(path, required=required, id_field="id", on_error=on_error)
    if result.skipped:
        log.warning("%s: skipped %d seed records %s", path, result.n_skipped, result.skipped)
    records = []
    for row in result.records:
        record = {k: v for k, v in row.items() if k not in (cfg.instruction_field, cfg.output_field)}
        record["instruction"] = row[cfg.instruction_field].strip()
        record["output"] = row[cfg.output_field].strip()
        record.setdefault("source", source)
        records.append(record)
    return assign_ids(records, prefix=path.stem if source != EMBEDDED else "seed")


def seed_source_problem(source: str) -> str | None:
    """Why ``seed.source`` names no seed (None when it does): checked before any work, and by :func:`load_seed`."""
    if source in (EMBEDDED, OASST) or Path(source).is_file():
        return None
    return f"unknown seed source (use {EMBEDDED!r}, {OASST!r} or an existing file)"


def load_seed(cfg: SeedConfig, seed: int = 0, on_error: str = "raise") -> list[dict[str, Any]]:
    """Load seed pairs as ``{"id", "instruction", "output", "source", ...}`` records, subsampled to ``cfg.size``."""
    check_on_error(on_error)
    if cfg.source == EMBEDDED:
        with resources.as_file(embedded_file("seed.jsonl")) as path:
            embedded_cfg = SeedConfig(source=EMBEDDED)
            records = _load_file(Path(path), embedded_cfg, on_error, EMBEDDED)
    elif cfg.source == OASST:
        pairs = _load_oasst(cfg, on_error)
        records = collect_records(
            ((f"{cfg.hub_dataset}:{p['id']}", p) for p in pairs),
            required={"instruction": str, "output": str},
            id_field="id",
            on_error=on_error,
        ).records
    elif Path(cfg.source).is_file():
        records = _load_file(Path(cfg.source), cfg, on_error, Path(cfg.source).stem)
    else:
        raise DataError(str(cfg.source), seed_source_problem(str(cfg.source)) or "not a file", "not_found")
    if not records:
        raise DataError(str(cfg.source), "no seed pairs loaded", "empty")
    return subsample(records, cfg.size, seed)
