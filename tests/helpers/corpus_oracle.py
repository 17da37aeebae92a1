"""Test oracle for the corpus stage: load a small corpus into a list and clean it in memory (the behaviour the
datatrove engine, bft.data.corpus.build_corpus, must reproduce; tests/test_corpus_engine.py compares the two).
Near-duplicates by datasketch's MinHash LSH (a dev dependency), independent of the engine's datatrove MinHash.

Cleaning, in order: strip noise lines; drop documents by symbol ratio, ALL-CAPS line fraction and mean line
length; split long documents at paragraph boundaries; apply the length bounds; drop near-duplicates (MinHash LSH).
"""

from __future__ import annotations

import itertools
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from bft.config.schema import CorpusConfig
from bft.data.corpus.rules import rejection_reason, segment_text, strip_noise_lines, symbol_ratio
from bft.data.embedded import embedded_file
from bft.data.io import DataError, ReadResult, check_on_error, collect_records, iter_raw

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".pq")
MINHASH_SEED = 1
SHINGLE_WORDS = 5
REMOVAL_REASONS = ("empty", "symbol_ratio", "caps_lines", "short_lines", "too_short", "too_long", "near_duplicate")

# ---------------------------------------------------------------------------------------------- loading


def _normalize_docs(rows: Iterable[Mapping[str, Any]], cfg: CorpusConfig, source: str) -> list[dict[str, Any]]:
    docs = []
    for index, row in enumerate(rows):
        doc_id = row.get(cfg.id_field)
        docs.append(
            {
                "id": str(doc_id) if doc_id is not None else f"{source}-{index:06d}",
                "text": row[cfg.text_field],
                "url": str(row.get("url") or ""),
                "source": str(row.get("source") or source),
            }
        )
    return docs


def load_corpus(cfg: CorpusConfig, on_error: str = "raise") -> list[dict[str, Any]]:
    """Load documents as ``{"id", "text", "url", "source"}``, at most ``cfg.max_documents``."""
    return read_corpus(cfg, on_error).records


def read_corpus(cfg: CorpusConfig, on_error: str = "raise") -> ReadResult:
    """Like :func:`load_corpus`, also returning the counts of skipped input rows by reason.

    ``cfg.source``: ``embedded`` or a local .jsonl/.json/.parquet path.
    """
    check_on_error(on_error)
    required = {cfg.text_field: str}
    if cfg.source == EMBEDDED:
        cfg_fields = CorpusConfig(source=EMBEDDED)
        with resources.as_file(embedded_file("corpus.jsonl")) as path:
            items = itertools.islice(iter_raw(path), cfg.max_documents)
            result = collect_records(items, required={"text": str}, id_field="id", on_error=on_error)
        return _finish(result, cfg_fields, EMBEDDED)
    path = Path(cfg.source)
    if path.is_file():
        items = itertools.islice(iter_raw(path), cfg.max_documents)
        result = collect_records(items, required=required, id_field=cfg.id_field, on_error=on_error)
        return _finish(result, cfg, path.stem)
    if path.suffix.lower() in FILE_SUFFIXES:
        raise DataError(str(path), "file not found", "not_found")
    raise DataError(str(path), "not a local file: hub datasets and URL lists are read by build_corpus (datatrove)", "not_found")


def _finish(result: ReadResult, cfg: CorpusConfig, source: str) -> ReadResult:
    if result.skipped:
        log.warning("corpus %s: skipped %d documents %s", source, result.n_skipped, result.skipped)
    docs = _normalize_docs(result.records, cfg, source)
    if not docs:
        raise DataError(source, "no documents loaded", "empty")
    return ReadResult(docs, result.skipped)


# ---------------------------------------------------------------------------------------------- near-duplicates

_WORD = re.compile(r"\w+")


def shingles(text: str, n: int = SHINGLE_WORDS) -> set[bytes]:
    """Lower-cased word n-grams (the whole text as one shingle when shorter than ``n`` words)."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}


def near_duplicate_mask(texts: list[str], threshold: float, num_perm: int, seed: int = MINHASH_SEED) -> list[bool]:
    """True for each text whose estimated Jaccard similarity to an earlier kept text is >= ``threshold``."""
    from datasketch import MinHash, MinHashLSH

    template = MinHash(num_perm=num_perm, seed=seed)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: dict[str, MinHash] = {}
    mask: list[bool] = []
    for index, text in enumerate(texts):
        signature = template.copy()
        signature.update_batch(list(shingles(text)))
        duplicate = any(signature.jaccard(kept[key]) >= threshold for key in lsh.query(signature))
        mask.append(duplicate)
        if not duplicate:
            key = str(index)
            lsh.insert(key, signature)
            kept[key] = signature
    return mask


# ---------------------------------------------------------------------------------------------- pipeline


def clean_corpus(docs: list[dict[str, Any]], cfg: CorpusConfig) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Clean documents; returns (kept docs or segments, counts).

    Documents are checked for symbol ratio before and after noise stripping (``empty`` = nothing left after it).
    Counts: ``input`` documents, ``noise_lines`` stripped, ``segmented`` documents and the ``segments`` they
    produced, one count per removal reason (:data:`REMOVAL_REASONS`; units after segmentation for the length
    bounds and near-duplicates), and ``kept``. Kept records hold ``id`` (``docid#k`` for segments), ``text``,
    ``url``, ``source`` and ``source_id``.
    """
    counts: Counter[str] = Counter({reason: 0 for reason in REMOVAL_REASONS})
    counts["input"] = len(docs)
    units: list[dict[str, Any]] = []
    for doc in docs:
        if symbol_ratio(doc["text"]) > cfg.max_symbol_ratio:  # junk before noise stripping hides it
            counts["symbol_ratio"] += 1
            continue
        text, removed_lines = strip_noise_lines(doc["text"])
        counts["noise_lines"] += removed_lines
        reason = rejection_reason(text, cfg)
        if reason is not None:
            counts[reason] += 1
            continue
        pieces = segment_text(text, cfg.max_chars) if cfg.segment else [text]
        if len(pieces) > 1:
            counts["segmented"] += 1
            counts["segments"] += len(pieces)
        for k, piece in enumerate(pieces, start=1):
            if len(piece) < cfg.min_chars:
                counts["too_short"] += 1
                continue
            if len(piece) > cfg.max_chars:
                counts["too_long"] += 1
                continue
            unit_id = f"{doc['id']}#{k}" if len(pieces) > 1 else str(doc["id"])
            units.append(
                {
                    "id": unit_id,
                    "text": piece,
                    "url": doc.get("url", ""),
                    "source": doc.get("source", ""),
                    "source_id": str(doc["id"]),
                }
            )
    if cfg.dedup and units:
        mask = near_duplicate_mask([u["text"] for u in units], cfg.minhash_threshold, cfg.minhash_num_perm)
        counts["near_duplicate"] = sum(mask)
        units = [u for u, dup in zip(units, mask, strict=True) if not dup]
    counts["kept"] = len(units)
    return units, dict(counts)
