"""Helpers several stages share: training examples with tags, progress logging."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("bft.pipeline.stages")
Record = dict[str, Any]


def tagged_examples(records: list[Record], tag: str | None) -> list[Record]:
    """(instruction with its tag, output) training examples: ``sft.seed_tag`` for seed pairs, ``sft.web_tag`` for
    generated ones (Humpback's tagging)."""
    from bft.prompts import with_tag

    return [{"prompt": with_tag(r["instruction"], tag), "completion": r["output"]} for r in records]


def progress(stage: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        log.info("%s: shard %d/%d", stage, done, total)

    return report
