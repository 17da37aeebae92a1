"""Eval answer (the eval_outputs and base_outputs stages): a model answers each instruction of the eval set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bft.generation.base import Completion
from bft.prompts import render_chat, with_tag
from bft.tasks.base import GenerationTask, Record


@dataclass(frozen=True)
class Settings:
    """The sampling part of ``eval``, the inference tag and the names recorded with each answer."""

    temperature: float
    top_p: float
    max_new_tokens: int
    tag: str | None  # appended to each instruction (bft.eval.inference_tags); None: no tag
    generator: str  # the answering model's name in alpaca_eval's model_outputs.json
    eval_set: str  # the dataset name of a record that has none


def render(record: Record, settings: Settings, tokenizer: Any) -> str:
    return render_chat(tokenizer, with_tag(record["instruction"], settings.tag))[0]


def parse(record: Record, completion: Completion, settings: Settings) -> Record:
    """An alpaca_eval output record (a new record: the eval set's other fields are not carried over)."""
    return {
        "instruction": record["instruction"],
        "output": completion.text.strip(),
        "generator": settings.generator,
        "dataset": record.get("dataset", settings.eval_set),
    }


TASK = GenerationTask(
    name="eval_answer",
    seed_namespace="eval",
    settings=Settings,
    input_columns=("instruction", "dataset"),
    output_columns=("instruction", "output", "generator", "dataset"),
    render=render,
    parse=parse,
)
