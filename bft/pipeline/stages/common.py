"""Helpers several stages share: training examples with tags."""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]


def tagged_examples(records: list[Record], tag: str | None) -> list[Record]:
    """(instruction with its tag, output) training examples: ``sft.seed_tag`` for seed pairs, ``sft.web_tag`` for
    generated ones (Humpback's tagging)."""
    from bft.prompts import with_tag

    return [{"prompt": with_tag(r["instruction"], tag), "completion": r["output"]} for r in records]
