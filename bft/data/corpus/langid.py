"""Language identification offline: py3langid (its model ships inside the wheel) wrapped as a datatrove filter.

datatrove's own ``LanguageFilter`` downloads fastText's model at run time, which this project cannot do.
Also an offline English word tokenizer for datatrove's Gopher / C4 / FineWeb / MinHash steps.
"""

from __future__ import annotations

import re
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.word_tokenizers import WordTokenizer, strip_strings

_WORDS = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

_IDENTIFIER: Any = None


def identifier() -> Any:
    """The py3langid identifier with normalised probabilities (loaded once per process).

    The model is decompressed in memory: py3langid's own loader streams it through a temporary file, so a full
    (or size-limited) temp folder would stop the corpus stage before it writes anything of its own."""
    global _IDENTIFIER
    if _IDENTIFIER is None:
        import io
        import lzma

        import numpy as np
        from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier
        from py3langid.modelio import _to_array

        with lzma.open(MODEL_DIR / MODEL_FILE) as src, np.load(io.BytesIO(src.read()), allow_pickle=False) as data:
            ptc, pc, classes = np.asarray(data["ptc"]), np.asarray(data["pc"]), data["classes"].tolist()
            nextmove, row, output = _to_array(data["nextmove"]), _to_array(data["nextmove_row"]), data["out_feat"].tolist()
        _IDENTIFIER = LanguageIdentifier(ptc, pc, classes, nextmove, output, norm_probs=True, tk_row=row)
    return _IDENTIFIER


def detect_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the most likely language of ``text``."""
    lang, prob = identifier().classify(text)
    return str(lang), float(prob)


class LanguageIdFilter(BaseFilter):
    """Keep documents whose top language is in ``languages`` with probability >= ``threshold``.

    Dropped documents carry the reason ``lang_<code>`` (or ``lang_low_confidence``); the detected language and
    its probability go into the metadata.
    """

    name = "language"

    def __init__(self, languages: list[str], threshold: float, exclusion_writer: Any = None) -> None:
        super().__init__(exclusion_writer)
        self.languages = frozenset(languages)
        self.threshold = threshold

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        lang, prob = detect_language(doc.text)
        doc.metadata["language"] = lang
        doc.metadata["language_score"] = round(prob, 4)
        if lang not in self.languages:
            return False, f"lang_{lang}"
        if prob < self.threshold:
            return False, "lang_low_confidence"
        return True


class OfflineEnglishTokenizer(WordTokenizer):
    """English words and sentences by regular expressions, with no data download (datatrove's default English
    tokenizer needs NLTK's ``punkt_tab``): words are letter/digit runs (with inner apostrophes) and single
    punctuation marks; sentences end at ``.``, ``!`` or ``?`` followed by white space."""

    def __init__(self) -> None:
        super().__init__("en")

    def word_tokenize(self, text: str) -> list[str]:
        return _WORDS.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return strip_strings([text[a:b] for a, b in self.span_tokenize(text)])

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], 0
        for match in _SENTENCE_END.finditer(text):
            spans.append((start, match.start()))
            start = match.end()
        if start < len(text):
            spans.append((start, len(text)))
        return [(a, b) for a, b in spans if text[a:b].strip()]

    def __eq__(self, other: object) -> bool:  # one cache entry in datatrove's lru-cached split_into_parts
        return isinstance(other, OfflineEnglishTokenizer)

    def __hash__(self) -> int:
        return hash(OfflineEnglishTokenizer)
