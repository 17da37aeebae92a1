"""Compute every metric for a list of datasets: one row per dataset, plus what the plots need."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bft.analysis.diversity import per_thousand, unique_ngrams
from bft.analysis.embeddings import Embedder
from bft.analysis.inputs import Dataset
from bft.analysis.lengths import char_lengths, length_stats, token_lengths
from bft.analysis.mauve_distance import MIN_RECORDS, compute_mauve, split_half
from bft.analysis.overlap import eval_overlap


@dataclass
class AnalysisResult:
    rows: list[dict[str, Any]]
    meta: dict[str, Any]
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    token_lengths: dict[str, dict[str, list[int]]] = field(default_factory=dict)


def diversity_row(ds: Dataset) -> dict[str, Any]:
    n = len(ds.records)
    resp = unique_ngrams(ds.outputs)
    instr = None if ds.raw else unique_ngrams(ds.instructions)
    return {
        "instr_unique_trigrams": instr,
        "instr_trigrams_per_1k": None if instr is None else per_thousand(instr, n),
        "resp_unique_trigrams": resp,
        "resp_trigrams_per_1k": per_thousand(resp, n),
    }


def length_row(ds: Dataset, tokenizer: Any) -> tuple[dict[str, Any], dict[str, list[int]]]:
    row: dict[str, Any] = {}
    toks: dict[str, list[int]] = {}
    for prefix, key, texts in (("instr", "instruction", ds.instructions), ("resp", "response", ds.outputs)):
        if prefix == "instr" and ds.raw:
            tok, char = [], []
        else:
            tok, char = token_lengths(texts, tokenizer), char_lengths(texts)
        toks[key] = tok
        for unit, values in (("tokens", tok), ("chars", char)):
            for stat, value in length_stats(values).items():
                row[f"{prefix}_{unit}_{stat}"] = value
    return row, toks


def mauve_rows(
    datasets: Sequence[Dataset], embeddings: dict[str, np.ndarray], reference: str, min_records: int = MIN_RECORDS
) -> dict[str, dict[str, Any]]:
    """MAUVE of each dataset's responses against the reference's; the reference row is its split-half ceiling."""
    out: dict[str, dict[str, Any]] = {}
    ref = embeddings[reference]
    for ds in datasets:
        if ds.name == reference:
            a, b = split_half(ref)
            res = compute_mauve(a, b, min_records=min_records)
            note = res.reason or "reference: split-half self-MAUVE"
        else:
            res = compute_mauve(ref, embeddings[ds.name], min_records=min_records)
            note = res.reason
        out[ds.name] = {"mauve": res.score, "mauve_note": note}
    return out


def analyze(
    datasets: Sequence[Dataset],
    *,
    tokenizer: Any,
    embedder: Embedder,
    features: str = "minilm",
    reference: str | None = None,
    eval_instructions: Sequence[str] | None = None,
    do_mauve: bool = True,
    overlap_embedder: Embedder | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> AnalysisResult:
    """All metrics for ``datasets``; ``reference`` names the MAUVE P set (default the first dataset)."""
    reference = reference or datasets[0].name
    names = [d.name for d in datasets]
    if reference not in names:
        raise ValueError(f"MAUVE reference {reference!r} is not one of the datasets: {', '.join(names)}")
    timings: dict[str, float] = {}
    rows: dict[str, dict[str, Any]] = {}
    lengths: dict[str, dict[str, list[int]]] = {}
    embeddings: dict[str, np.ndarray] = {}

    t = time.perf_counter()
    for ds in datasets:
        rows[ds.name] = {
            "dataset": ds.name,
            "path": str(ds.path),
            "kind": "raw web" if ds.raw else "pairs",
            "n_records": len(ds.records),
            "n_total": ds.n_total,
            **diversity_row(ds),
        }
    timings["diversity_s"] = time.perf_counter() - t

    t = time.perf_counter()
    for ds in datasets:
        row, lengths[ds.name] = length_row(ds, tokenizer)
        rows[ds.name].update(row)
    timings["lengths_s"] = time.perf_counter() - t

    t = time.perf_counter()
    for ds in datasets:
        log(f"embedding {len(ds.records)} responses of {ds.name} ({features})")
        embeddings[ds.name] = embedder(ds.outputs)
    timings["embeddings_s"] = time.perf_counter() - t

    t = time.perf_counter()
    if do_mauve:
        log(f"MAUVE against {reference}")
        for name, values in mauve_rows(datasets, embeddings, reference).items():
            rows[name].update(values)
    else:
        for name in rows:
            rows[name].update({"mauve": None, "mauve_note": "skipped (--no-mauve)"})
    timings["mauve_s"] = time.perf_counter() - t

    t = time.perf_counter()
    for ds in datasets:
        if eval_instructions is None:
            counts: dict[str, int | None] = {"exact": None, "ngram": None, "embedding": None, "total": None}
        else:
            log(f"eval overlap of {ds.name}")
            counts = dict(eval_overlap(ds, eval_instructions, embedder=overlap_embedder))
        rows[ds.name].update({f"overlap_{k}": v for k, v in counts.items()})
        rows[ds.name]["notes"] = "; ".join(ds.notes)
    timings["overlap_s"] = time.perf_counter() - t

    meta = {
        "mauve_reference": reference,
        "features": features,
        "mauve": do_mauve,
        "eval_instructions": None if eval_instructions is None else len(eval_instructions),
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    return AnalysisResult([rows[n] for n in names], meta, embeddings, lengths)
