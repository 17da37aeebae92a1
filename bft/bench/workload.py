"""Deterministic synthetic documents and (instruction, output) pairs for the benchmark (no data set needed)."""

from __future__ import annotations

import random

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
