"""Instruction backtranslation (the augment stage): the backward model writes the instruction a document answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bft.generation.base import Completion
from bft.parsers import parse_instruction
from bft.prompts import backtranslation_prompt, render_chat
from bft.tasks.base import GenerationTask, Record


@dataclass(frozen=True)
class Settings:
    """``generation.augment`` (sampling, ``keep_unfinished``) and the backward model's artifact key."""

    temperature: float
    top_p: float
    max_new_tokens: int
    keep_unfinished: bool  # keep an instruction cut at max_new_tokens (otherwise it parses to None)
    model_key: str  # recorded on each pair as backward_model


def render(record: Record, settings: Settings, tokenizer: Any) -> str:
    return render_chat(tokenizer, backtranslation_prompt(record["text"]))[0]


def parse(record: Record, completion: Completion, settings: Settings) -> Record:
    instruction = parse_instruction(completion.text, completion.finished or settings.keep_unfinished)
    return {
        **record,
        "instruction": instruction,
        "backward_raw": completion.text,
        "backward_finished": completion.finished,
        "backward_model": settings.model_key,
    }


def _unfinished(record: Record) -> bool:
    return record.get("backward_finished") is False  # cut at max_new_tokens: dropped unless keep_unfinished


TASK = GenerationTask(
    name="instruction_backtranslation",
    seed_namespace="augment",
    settings=Settings,
    input_columns=("text",),
    output_columns=("instruction", "backward_raw", "backward_finished", "backward_model"),
    render=render,
    parse=parse,
    accounting={
        "unfinished_instructions": lambda r: int(_unfinished(r)),
        "empty_instructions": lambda r: int(not r["instruction"] and not _unfinished(r)),
    },
)
