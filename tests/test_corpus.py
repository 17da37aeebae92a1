"""Tests for bft.data.corpus: loading, noise stripping, heuristics, segmentation and MinHash dedup."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers.corpus_oracle import clean_corpus, load_corpus, near_duplicate_mask  # noqa: E402

from bft.config.schema import CorpusConfig  # noqa: E402
from bft.data.corpus import (  # noqa: E402
    caps_line_ratio,
    is_noise_line,
    mean_line_length,
    rejection_reason,
    segment_text,
    strip_noise_lines,
    symbol_ratio,
)
from bft.data.io import DataError  # noqa: E402

PARAGRAPH = (
    "The river town grew around a stone bridge built by local farmers who needed a dry crossing for their carts "
    "in spring, when the water rose quickly after the snow melted in the hills above the valley. "
)


_VOCABULARY = (
    "river town stone bridge farmer cart spring water snow hill valley market bread mill wheel road school church "
    "winter summer harvest field orchard apple barley wool sheep horse lantern window garden baker smith tailor "
    "letter train station clock tower square festival music dance song story mayor council meeting"
)
_WORDS = _VOCABULARY.split()


def _paragraph(i: int) -> str:
    """A distinct pseudo-prose paragraph of about 330 characters (seeded by ``i``)."""
    rng = random.Random(i)
    sentences = [" ".join(rng.choice(_WORDS) for _ in range(9)).capitalize() + "." for _ in range(6)]
    return " ".join(sentences)


def _doc(doc_id: str, text: str) -> dict[str, str]:
    return {"id": doc_id, "text": text, "url": f"https://x.example/{doc_id}", "source": "test"}


@pytest.mark.parametrize(
    "line",
    [
        "Home | About | Contact",
        "Home > Recipes > Soups",
        "We use cookies to improve your experience. Accept all cookies",
        "Click here to subscribe!",
        "Share on Facebook | Tweet | Pin it",
        "Share this: Facebook Twitter Email",
        "© 2021 Example Media. All rights reserved.",
        "Copyright 2023 Some Paper",
        "14 Comments",
        "Leave a comment",
        "*** ===== ***",
        "Skip to content",
        "Tags: soup, winter",
    ],
)
def test_noise_lines_detected(line: str) -> None:
    assert is_noise_line(line)


@pytest.mark.parametrize(
    "line",
    [
        "Let the cookies cool on the tray, then use a spatula to move them.",
        "The copyright on the novel expired in 1998.",
        "Tagine is a slow-cooked North African dish.",
        "Date: 12/05/2020",
        "Cook for 8 minutes | stir often until the onions are soft and golden brown.",
        "",
    ],
)
def test_content_lines_kept(line: str) -> None:
    assert not is_noise_line(line)


def test_strip_noise_lines_counts_and_collapses_blank_lines() -> None:
    text = "Home | About | Contact\n\nReal content line that matters.\n\n\n14 Comments\nAnother real line."
    cleaned, removed = strip_noise_lines(text)
    assert removed == 2
    assert cleaned == "Real content line that matters.\n\nAnother real line."


def test_heuristic_functions() -> None:
    assert symbol_ratio("abc") == 0.0
    assert symbol_ratio("$$$a") == 0.75
    assert caps_line_ratio("HELLO THERE\nnormal line\nOK\n") == 0.5
    assert mean_line_length("abcd\n\nab\n") == 3.0
    cfg = CorpusConfig()
    assert rejection_reason("@@ ## $$ %% ok", cfg) == "symbol_ratio"
    assert rejection_reason("BIG HEADER LINE\nANOTHER ONE HERE\nsome normal text in here", cfg) == "caps_lines"
    assert rejection_reason("short\nlines\nonly", cfg) == "short_lines"
    assert rejection_reason("   ", cfg) == "empty"
    assert rejection_reason(PARAGRAPH, cfg) is None


def test_segmentation_respects_bounds_and_paragraphs() -> None:
    paragraphs = [_paragraph(i) for i in range(12)]
    text = "\n\n".join(paragraphs)
    segments = segment_text(text, max_chars=1500)
    assert len(segments) > 1
    assert all(len(s) <= 1500 for s in segments)
    assert "\n\n".join(segments) == text  # split only at paragraph boundaries
    sizes = [len(s) for s in segments]
    assert min(sizes) > 0.5 * max(sizes)  # balanced, no tiny tail
    assert segment_text("short text", max_chars=1500) == ["short text"]


def test_segmentation_splits_oversized_paragraph_at_sentences() -> None:
    text = PARAGRAPH * 20  # one paragraph, no newlines
    segments = segment_text(text.strip(), max_chars=700)
    assert all(len(s) <= 700 for s in segments)
    assert all(s.endswith(".") for s in segments)


def test_near_duplicate_mask_keeps_first_and_distinct() -> None:
    base = " ".join(f"word{i}" for i in range(300))
    edited = base.replace("word150", "changed", 1)
    other = " ".join(f"other{i}" for i in range(300))
    assert near_duplicate_mask([base, other, edited], threshold=0.8, num_perm=128) == [False, False, True]


def test_clean_corpus_counts_ids_and_fields() -> None:
    long_text = "\n\n".join(_paragraph(i) for i in range(12))
    body = PARAGRAPH * 3
    docs = [
        _doc("a", "Home | About | Contact\n" + body + "\nClick here to subscribe!"),
        _doc("b", long_text),
        _doc("c", "This single line is far too short to keep in the corpus."),
        _doc("d", "#### $$$ %%% ^^^ &&& *** ((( ))) ###"),
        _doc("e", body.replace("stone bridge", "wooden bridge", 1)),
    ]
    cfg = CorpusConfig(max_chars=1500)
    kept, counts = clean_corpus(docs, cfg)
    ids = [d["id"] for d in kept]
    assert ids[0] == "a" and all(i.startswith("b#") for i in ids[1:])
    assert counts["input"] == 5 and counts["kept"] == len(kept)
    assert counts["noise_lines"] == 2
    assert counts["too_short"] == 1 and counts["symbol_ratio"] == 1 and counts["near_duplicate"] == 1
    assert counts["segmented"] == 1 and counts["segments"] == len(ids) - 1
    assert "Click here" not in kept[0]["text"]
    for doc in kept:
        assert set(doc) == {"id", "text", "url", "source", "source_id"}
        assert cfg.min_chars <= len(doc["text"]) <= cfg.max_chars
    assert kept[1]["source_id"] == "b" and kept[1]["url"] == "https://x.example/b"


def test_clean_corpus_without_segmentation_or_dedup() -> None:
    docs = [_doc("b", "\n\n".join(_paragraph(i) for i in range(12))), _doc("a", PARAGRAPH * 3)]
    kept, counts = clean_corpus(docs + [_doc("a2", PARAGRAPH * 3)], CorpusConfig(segment=False, dedup=False))
    assert [d["id"] for d in kept] == ["a", "a2"]
    assert counts["too_long"] == 1 and counts["near_duplicate"] == 0


def test_embedded_corpus_loads_and_cleans() -> None:
    docs = load_corpus(CorpusConfig())
    assert len(docs) == 80
    assert len({d["id"] for d in docs}) == 80
    lengths = [len(d["text"]) for d in docs]
    assert sum(200 <= n <= 2500 for n in lengths) >= 70
    assert sum(4000 <= n <= 6000 for n in lengths) == 2
    assert sum(n < 200 for n in lengths) == 2
    kept, counts = clean_corpus(docs, CorpusConfig())
    assert counts["near_duplicate"] == 3
    assert counts["symbol_ratio"] == 1
    assert counts["too_short"] == 2
    assert counts["segmented"] == 2
    assert counts["kept"] == len(kept) == 80 - 6 + 2
    assert all(len(d["text"]) <= 3000 for d in kept)


def test_load_corpus_local_file_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "web.jsonl"
    rows = [{"doc": "x1", "body": PARAGRAPH}, {"doc": "x2", "body": ""}, {"doc": "x3", "body": PARAGRAPH}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = CorpusConfig(source=str(path), text_field="body", id_field="doc")
    with pytest.raises(DataError, match=r"web\.jsonl:2: field 'body' is empty"):
        load_corpus(cfg)
    docs = load_corpus(cfg, on_error="skip")
    assert [d["id"] for d in docs] == ["x1", "x3"]
    assert docs[0]["source"] == "web" and docs[0]["url"] == ""
    cfg.max_documents = 1
    assert len(load_corpus(cfg)) == 1
    with pytest.raises(DataError, match="file not found"):
        load_corpus(CorpusConfig(source=str(tmp_path / "missing.jsonl")))
