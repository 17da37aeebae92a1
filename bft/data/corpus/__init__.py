"""Unlabelled web documents: the corpus stage, on datatrove.

:func:`build_corpus` is the stage's one entry point (readers, language identification, filters, segmentation,
MinHash near-duplicate removal, on a local, Slurm or Ray executor). The small in-memory oracle whose behaviour the
engine's default chain reproduces lives with the tests (tests/helpers/corpus_oracle.py).
"""

from bft.data.corpus.build import build_corpus
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
    "is_navigation_line",
    "is_noise_line",
    "mean_line_length",
    "rejection_reason",
    "segment_at_headers",
    "segment_text",
    "strip_noise_lines",
    "symbol_ratio",
]
