"""Answer rewrite (the rewrite stage): an aligned model turns each kept document into an answer to its instruction.

``mode=rewrite`` uses BFT's rewriting prompt (answer parsed from ``[RES]...[/RES]``; a rewrite counts only when it
is closed by ``[/RES]`` or its completion ended by itself, see :func:`bft.parsers.parse_rewrite_completion`);
``mode=distill`` gives the instruction alone to the aligned model (the distillation baseline). The raw completion
and how it ended (``rewrite_status``) are kept for provenance and counted (parsed | truncated | unparsed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bft.generation.base import Completion
from bft.parsers import PARSED, REWRITE_STATUSES, TRUNCATED, UNPARSED, parse_rewrite_completion
from bft.prompts import render_chat, rewrite_prompt
from bft.tasks.base import GenerationTask, Record

MODES = ("rewrite", "distill")


@dataclass(frozen=True)
class Settings:
    """The answering part of ``rewriter`` and the rewriting model's name."""

    mode: str  # rewrite | distill
    prefill_res_tag: bool  # rewrite mode: start the assistant turn with "[RES]"
    keep_unparsed: bool  # rewrite mode: a truncated or unparsed rewrite keeps the document text instead of None
    temperature: float
    top_p: float
    max_new_tokens: int
    model_name: str  # recorded on each pair as rewriter

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"rewriter.mode: unknown mode '{self.mode}' ({' | '.join(MODES)})")

    @property
    def prefix(self) -> str:
        """What the assistant turn is prefilled with."""
        return "[RES]" if self.mode == "rewrite" and self.prefill_res_tag else ""


def render(record: Record, settings: Settings, tokenizer: Any) -> str:
    distill = settings.mode == "distill"
    user = record["instruction"] if distill else rewrite_prompt(record["instruction"], record["text"])
    return render_chat(tokenizer, user, assistant_prefix=settings.prefix)[0]


def parse(record: Record, completion: Completion, settings: Settings) -> Record:
    """The pair with ``output`` (``None`` when the rewrite is truncated or unparsed, unless ``keep_unparsed`` keeps
    the document text) and ``rewrite_status``. In distill mode an answer cut at ``max_new_tokens`` is kept (BFT's
    distilled answers are plain completions) but its status says ``truncated``, so the accounting shows it."""
    if settings.mode == "distill":
        output = completion.text.strip() or None
        status = UNPARSED if output is None else (PARSED if completion.finished else TRUNCATED)
    else:
        parsed = parse_rewrite_completion(settings.prefix + completion.text, completion.finished)
        output, status = parsed.output, parsed.status
        if output is None and settings.keep_unparsed:
            output = record["text"]
    return {**record, "output": output, "rewriter_raw": completion.text, "rewriter": settings.model_name} | {
        "rewrite_status": status,
        "rewriter_finished": completion.finished,
    }


TASK = GenerationTask(
    name="answer_rewrite",
    seed_namespace="rewrite",
    settings=Settings,
    input_columns=("instruction", "text"),
    output_columns=("output", "rewriter_raw", "rewriter", "rewrite_status", "rewriter_finished"),
    render=render,
    parse=parse,
    accounting={status: (lambda r, s=status: int(r.get("rewrite_status") == s)) for status in REWRITE_STATUSES},
)
