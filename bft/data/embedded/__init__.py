"""Small original datasets shipped with the package: seed pairs, web corpus, eval set and curation labels."""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable

NAMES = ("seed.jsonl", "corpus.jsonl", "eval.jsonl", "labels.jsonl")


def embedded_file(name: str) -> Traversable:
    """The packaged file ``name`` (use ``importlib.resources.as_file`` for a real path)."""
    if name not in NAMES:
        raise ValueError(f"unknown embedded file {name!r}; choose from {NAMES}")
    return resources.files(__name__).joinpath(name)
