"""Unlabelled web documents: the corpus stage, on datatrove.

:func:`build_corpus` is the stage's one entry point (readers, language identification, filters, segmentation,
MinHash near-duplicate removal, on a local, Slurm or Ray executor). :mod:`.memory` keeps the small in-memory
reference path (``read_corpus`` + ``clean_corpus``) whose behaviour the engine's default chain reproduces.
"""

from bft.data.corpus.build import build_corpus
from bft.data.corpus.memory import clean_corpus, load_corpus, near_duplicate_mask, read_corpus, shingles
from bft.data.corpus.rules import (
    caps_line_ratio,
    is_navigation_line,
    is_noise_line,
    mean_line_length,
    rejection_reason,
    segment_at_headers,
    segment_text,
    strip_noise_lines,
    symbol_ratio,
)

__all__ = [
    "build_corpus",
    "caps_line_ratio",
    "clean_corpus",
    "is_navigation_line",
    "is_noise_line",
    "load_corpus",
    "mean_line_length",
    "near_duplicate_mask",
    "read_corpus",
    "rejection_reason",
    "segment_at_headers",
    "segment_text",
    "shingles",
    "strip_noise_lines",
    "symbol_ratio",
]
