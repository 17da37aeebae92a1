"""Deterministic synthetic documents and (instruction, output) pairs for the benchmark (no data set needed)."""

from __future__ import annotations

import json
import random
from pathlib import Path

_TOPICS = [
    "sourdough bread",
    "solar panels",
    "the French revolution",
    "sorting algorithms",
    "tide pools",
    "marathon training",
    "compound interest",
    "volcanoes",
    "jazz harmony",
    "composting",
]
_SENTENCES = [
    "{t} has a long history that most people never hear about.",
    "The first step is to understand the basic terms used when people talk about {t}.",
    "Many beginners make the same mistakes, and most of them are easy to avoid.",
    "Experts recommend starting small, measuring the results and adjusting one thing at a time.",
    "A common question is how much time it takes to see progress with {t}.",
    "The answer depends on the goals, the budget and the tools that are available.",
    "In practice, a simple checklist saves hours of confusion later on.",
    "Several studies compared different approaches and found surprisingly small differences.",
]


def documents(n: int, sentences: int = 12, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        topic = _TOPICS[i % len(_TOPICS)]
        k = sentences + rng.randint(-sentences // 3, sentences // 3)
        docs.append(" ".join(rng.choice(_SENTENCES).format(t=topic).capitalize() for _ in range(k)))
    return docs


def pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    docs = documents(n, seed=seed)
    return [(f"Explain {_TOPICS[i % len(_TOPICS)]} to a beginner.", d) for i, d in enumerate(docs)]


# A real corpus's shape: its documents when the file is there (a development checkout), else synthetic documents
# cut to the shipped token lengths of those same documents (``real_lengths.json``: numbers only, no text).
DEFAULT_CORPUS = Path("../shared/data/corpus/web_en_dev.jsonl")
LENGTHS_FILE = Path(__file__).with_name("real_lengths.json")
MIN_CHARS, MAX_CHARS = 600, 3000  # conf/corpus/file.yaml's filter, as the corpus stage applies it


def shipped_lengths() -> list[int]:
    return json.loads(LENGTHS_FILE.read_text())["token_lengths"]


def real_documents(n: int, tokenizer, corpus: Path | None = DEFAULT_CORPUS) -> tuple[list[str], str]:
    """``n`` documents with a real corpus's token lengths, and where they came from.

    ``corpus`` (JSONL with a ``text`` field): its first ``n`` documents of 600-3,000 characters. Otherwise (or when
    the file is absent) synthetic documents, each exactly as many tokens of ``tokenizer`` as the shipped lengths say.
    """
    if corpus is not None and corpus.is_file():
        docs = []
        with corpus.open() as fh:
            for line in fh:
                text = json.loads(line).get("text", "")
                if MIN_CHARS <= len(text) <= MAX_CHARS:
                    docs.append(text)
                    if len(docs) == n:
                        break
        return docs, str(corpus)
    lengths = shipped_lengths()[:n]
    filler = tokenizer(" ".join(documents(1, sentences=400)), add_special_tokens=False)["input_ids"]
    docs = [tokenizer.decode(filler[i % 97 : i % 97 + length]) for i, length in enumerate(lengths)]
    return docs, f"synthetic, token lengths of {LENGTHS_FILE.name}"
