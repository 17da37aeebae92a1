"""Unlabelled web documents: load (embedded, local file, streamed hub dataset) and clean.

Cleaning, in order: strip noise lines; drop documents by symbol ratio, ALL-CAPS line fraction and mean line
length; split long documents at paragraph boundaries; apply the length bounds; drop near-duplicates (MinHash LSH).
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from bft.config.schema import CorpusConfig
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


def _iter_hub(cfg: CorpusConfig) -> Iterator[tuple[str, Any]]:
    import datasets

    stream = datasets.load_dataset(cfg.source, cfg.hub_config, split=cfg.split, streaming=True)
    for index, row in enumerate(itertools.islice(stream, cfg.max_documents)):
        yield f"{cfg.source}:{index + 1}", dict(row)


def load_corpus(cfg: CorpusConfig, on_error: str = "raise") -> list[dict[str, Any]]:
    """Load documents as ``{"id", "text", "url", "source"}``, at most ``cfg.max_documents``."""
    return read_corpus(cfg, on_error).records


def read_corpus(cfg: CorpusConfig, on_error: str = "raise") -> ReadResult:
    """Like :func:`load_corpus`, also returning the counts of skipped input rows by reason.

    ``cfg.source``: ``embedded``, a local .jsonl/.json/.parquet path, or a hub dataset id (streamed).
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
    result = collect_records(_iter_hub(cfg), required=required, id_field=cfg.id_field, on_error=on_error)
    return _finish(result, cfg, cfg.source)


def _finish(result: ReadResult, cfg: CorpusConfig, source: str) -> ReadResult:
    if result.skipped:
        log.warning("corpus %s: skipped %d documents %s", source, result.n_skipped, result.skipped)
    docs = _normalize_docs(result.records, cfg, source)
    if not docs:
        raise DataError(source, "no documents loaded", "empty")
    return ReadResult(docs, result.skipped)


# ---------------------------------------------------------------------------------------------- noise lines

_NAV_SEPARATORS = re.compile(r"\s*(?:\||»|›|·|•|>)\s*")
_NOISE_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(we|this (site|website)|our (site|website)|site) uses? cookies\b",
        r"\bcookie (policy|settings|preferences|consent|notice)\b",
        r"\b(accept|allow|agree to)( all| the use of)? cookies\b",
        r"\bby (continuing|using) (to (use|browse) )?(this|our) (site|website)\b",
        r"\bclick here\b",
        r"\b(subscribe|sign up) (to|for) (our|the) (newsletter|mailing list|updates)\b",
        r"^(subscribe|sign up|log ?in|sign in|register|search|menu|main menu|skip to (main )?content|back to top"
        r"|read more|continue reading|print|email|share|tweet|pin it|advertisement|sponsored|loading\.*"
        r"|previous( post)?|next( post)?|home|related posts?|tags?:.*)[\s.!:]*$",
        r"^share (this|on|via)\b",
        r"^(share|follow us)\b.*\b(facebook|twitter|pinterest|linkedin|instagram|whatsapp|email)\b",
        r"^((facebook|twitter|pinterest|linkedin|instagram|reddit|whatsapp|email|print|x)\W*){2,}$",
        r"^\d+\s+(comments?|replies|shares|likes|views)\b",
        r"^(leave a (comment|reply)|no comments( yet)?|comments? \(\d+\)|add a comment)\b",
        r"^(copyright\b|©)|©\s*(19|20)\d\d|\(c\)\s*(19|20)\d\d|\ball rights reserved\b",
        r"\b(terms (of (use|service)|and conditions)|privacy policy)\b.*\b(terms|privacy|policy|contact|sitemap)\b",
    )
]
_NOISE_MAX_LINE_CHARS = 200


def symbol_ratio(text: str) -> float:
    """Fraction of non-whitespace characters that are neither letters nor digits."""
    chars = [ch for ch in text if not ch.isspace()]
    if not chars:
        return 0.0
    return sum(1 for ch in chars if not ch.isalnum()) / len(chars)


def is_navigation_line(line: str) -> bool:
    """A menu like ``Home | About | Contact``: 3+ short items joined by separators."""
    parts = [p for p in _NAV_SEPARATORS.split(line.strip()) if p]
    if len(parts) < 3 or not _NAV_SEPARATORS.search(line):
        return False
    return all(len(p.split()) <= 3 and any(ch.isalpha() for ch in p) and not p.endswith((".", "?", "!", ",")) for p in parts)


def is_noise_line(line: str) -> bool:
    """Boilerplate: navigation, cookie banners, share buttons, "click here" ads, copyright footers, comment
    counts, or a line that is mostly symbols."""
    stripped = line.strip()
    if not stripped:
        return False
    if symbol_ratio(stripped) > 0.5 or not any(ch.isalnum() for ch in stripped):
        return True
    if len(stripped) > _NOISE_MAX_LINE_CHARS:
        return False
    return is_navigation_line(stripped) or any(p.search(stripped) for p in _NOISE_PATTERNS)


def strip_noise_lines(text: str) -> tuple[str, int]:
    """Remove noise lines; collapse runs of blank lines. Returns (text, number of lines removed)."""
    kept: list[str] = []
    removed = 0
    for line in text.splitlines():
        if is_noise_line(line):
            removed += 1
            continue
        line = line.rstrip()
        if not line.strip() and (not kept or not kept[-1].strip()):
            continue
        kept.append(line)
    return "\n".join(kept).strip(), removed


# ---------------------------------------------------------------------------------------------- document heuristics


def _content_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def caps_line_ratio(text: str) -> float:
    """Fraction of non-blank lines with 3+ letters that are ALL CAPS."""
    lines = [line for line in _content_lines(text) if sum(ch.isalpha() for ch in line) >= 3]
    if not lines:
        return 0.0
    return sum(1 for line in lines if line.isupper()) / len(lines)


def mean_line_length(text: str) -> float:
    """Mean number of characters over non-blank lines."""
    lines = _content_lines(text)
    return sum(len(line) for line in lines) / len(lines) if lines else 0.0


def rejection_reason(text: str, cfg: CorpusConfig) -> str | None:
    """The first document-level heuristic ``text`` fails, or None."""
    if not text.strip():
        return "empty"
    if symbol_ratio(text) > cfg.max_symbol_ratio:
        return "symbol_ratio"
    if caps_line_ratio(text) > cfg.max_caps_line_ratio:
        return "caps_lines"
    if mean_line_length(text) < cfg.min_mean_line_chars:
        return "short_lines"
    return None


# ---------------------------------------------------------------------------------------------- segmentation

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _split_units(text: str) -> tuple[list[str], str]:
    """Paragraphs (blank-line separated, else one per line) and the joiner that restores them."""
    if re.search(r"\n\s*\n", text):
        return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()], "\n\n"
    return [p.strip() for p in text.splitlines() if p.strip()], "\n"


def _split_oversized(unit: str, max_chars: int) -> list[str]:
    """Split one paragraph longer than ``max_chars`` at sentence ends, then at spaces, as a last resort hard."""
    if len(unit) <= max_chars:
        return [unit]
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(unit):
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars + 1)
            cut = cut if cut > 0 else max_chars
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    return _pack(pieces, " ", max_chars, max_chars)


def _pack(units: list[str], joiner: str, max_chars: int, target: float) -> list[str]:
    segments: list[str] = []
    current: list[str] = []
    size = 0
    for unit in units:
        extra = len(unit) + (len(joiner) if current else 0)
        if current and (size + extra > max_chars or size >= target):
            segments.append(joiner.join(current))
            current, size, extra = [], 0, len(unit)
        current.append(unit)
        size += extra
    if current:
        segments.append(joiner.join(current))
    return segments


def segment_text(text: str, max_chars: int) -> list[str]:
    """Split ``text`` at paragraph boundaries into segments of at most ``max_chars`` characters, of similar size."""
    if len(text) <= max_chars:
        return [text]
    units, joiner = _split_units(text)
    units = [piece for unit in units for piece in _split_oversized(unit, max_chars)]
    target = len(text) / math.ceil(len(text) / max_chars)
    return [s for s in _pack(units, joiner, max_chars, target) if s.strip()]


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
