"""bft's own cleaning rules as datatrove pipeline steps (see :mod:`bft.data.corpus.rules` for the text rules).

Default chain (today's embedded behaviour): :class:`CleanFilter` (symbol ratio before and after stripping noise
lines, ALL-CAPS lines, short lines), :class:`SegmentStep` (paragraph segments of at most ``max_chars``),
:class:`LengthFilter`. Paper options: :class:`HeaderFilter` (Humpback: navigation-like or all-caps headers),
:class:`BucketFilter` (BFT: Dolma's perplexity bucket), :class:`MaxTokensFilter` (BFT: near the context length).
"""

from __future__ import annotations

from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from bft.config.schema import CorpusConfig
from bft.data.corpus.rules import (
    is_navigation_line,
    is_noise_line,
    rejection_reason,
    segment_at_headers,
    segment_text,
    strip_noise_lines,
    symbol_ratio,
)


class CleanFilter(BaseFilter):
    """Strip noise lines (counted as ``noise_lines``), then drop by symbol ratio, emptiness, caps and line length."""

    name = "bft clean"

    def __init__(self, cfg: CorpusConfig, exclusion_writer: Any = None) -> None:
        super().__init__(exclusion_writer)
        self.max_symbol_ratio = cfg.max_symbol_ratio
        self.cfg = cfg

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if symbol_ratio(doc.text) > self.max_symbol_ratio:  # junk before noise stripping hides it
            return False, "symbol_ratio"
        text, removed = strip_noise_lines(doc.text)
        if removed:
            self.stat_update("noise_lines", value=removed)
        reason = rejection_reason(text, self.cfg)
        if reason is not None:
            return False, reason
        doc.text = text
        return True


class SegmentStep(PipelineStep):
    """Split long documents into segments (``docid#k``): at paragraph boundaries, or at headers (Humpback)."""

    type = "✂️ - SEGMENT"
    name = "bft segment"

    def __init__(self, max_chars: int | None, by: str = "paragraphs") -> None:
        super().__init__()
        if by not in ("paragraphs", "headers"):
            raise ValueError(f"corpus.segment_by must be 'paragraphs' or 'headers', got {by!r}")
        self.max_chars = max_chars
        self.by = by

    def pieces(self, text: str) -> list[tuple[str | None, str]]:
        if self.max_chars is None:  # corpus.segment=false: whole documents
            return [(None, text)]
        if self.by == "headers":
            return segment_at_headers(text, self.max_chars)
        return [(None, piece) for piece in segment_text(text, self.max_chars)]

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                pieces = self.pieces(doc.text)
            self.stat_update("documents")
            if len(pieces) > 1:
                self.stat_update("segmented")
                self.stat_update("segments", value=len(pieces))
            for k, (header, piece) in enumerate(pieces, start=1):
                metadata = dict(doc.metadata, source_id=str(doc.id))
                if header is not None:
                    metadata["header"] = header
                unit_id = f"{doc.id}#{k}" if len(pieces) > 1 else str(doc.id)
                yield Document(text=piece, id=unit_id, metadata=metadata)


class LengthFilter(BaseFilter):
    """Keep units of ``min_chars``..``max_chars`` characters (``too_short`` / ``too_long``)."""

    name = "bft length"

    def __init__(self, min_chars: int, max_chars: int, exclusion_writer: Any = None) -> None:
        super().__init__(exclusion_writer)
        self.min_chars, self.max_chars = min_chars, max_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if len(doc.text) < self.min_chars:
            return False, "too_short"
        if len(doc.text) > self.max_chars:
            return False, "too_long"
        return True


def is_bad_header(header: str) -> bool:
    """Humpback: a navigation-like header (menu, breadcrumb, boilerplate) or one written in ALL CAPS."""
    letters = [ch for ch in header if ch.isalpha()]
    all_caps = len(letters) >= 3 and all(ch.isupper() for ch in letters)
    return all_caps or is_navigation_line(header) or is_noise_line(header)


class HeaderFilter(BaseFilter):
    """Humpback: drop segments whose header is navigation-like or all caps (needs ``segment_by=headers``)."""

    name = "humpback headers"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        header = doc.metadata.get("header")
        if header and is_bad_header(header):
            return False, "bad_header"
        return True


class BucketFilter(BaseFilter):
    """BFT: keep documents of one Dolma perplexity bucket (e.g. ``head``) read from a record field
    (``corpus.bucket_field``); a record without one is removed (``no_bucket``), never passed. Dolma's own files carry
    the bucket in their names instead, selected before reading (``bft.data.corpus.readers.resolve_source``)."""

    name = "perplexity bucket"

    def __init__(self, bucket: str, exclusion_writer: Any = None) -> None:
        super().__init__(exclusion_writer)
        self.bucket = bucket

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        found = doc.metadata.get("bucket")
        if found is None:
            return False, "no_bucket"
        return True if found == self.bucket else (False, f"bucket_{found}")


class MaxTokensFilter(BaseFilter):
    """BFT: drop documents of more than ``max_tokens`` tokens (close to the model's context length)."""

    name = "max tokens"

    def __init__(self, tokenizer: str, max_tokens: int, exclusion_writer: Any = None) -> None:
        """``tokenizer``: a name of bft's model registry (``tiny``, ``llama2_7b``, ...), a folder or a hub id."""
        super().__init__(exclusion_writer)
        from bft.data.io import DataError
        from bft.models.registry import ModelNotFoundError, resolve_tokenizer_path

        try:
            self.tokenizer_name, self.max_tokens = resolve_tokenizer_path(tokenizer), max_tokens
        except ModelNotFoundError as err:
            raise DataError("corpus.tokenizer", str(err), "config") from None
        self._tokenizer: Any = None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self._tokenizer is None:
            from bft.models.registry import load_plain_tokenizer

            self._tokenizer = load_plain_tokenizer(self.tokenizer_name)
        n = len(self._tokenizer(doc.text, add_special_tokens=False)["input_ids"])
        return True if n <= self.max_tokens else (False, "too_many_tokens")
