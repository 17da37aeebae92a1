"""What one shard of each generation stage does, rebuilt from plain (JSON-able) parameters.

A worker process gets only a :class:`bft.workers.job.ShardJob`; ``PROCESSORS[job.kind](params, backend,
tokenizer)`` turns its parameters back into the function ``process(records, shard_index) -> records`` that the
stage would have run in-process. Each shard's sampling seed depends only on the run seed and the shard index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf

from bft.artifacts.shards import shard_seed

Record = dict[str, Any]
Process = Callable[[list[Record], int], list[Record]]


def augment(params: dict[str, Any], backend, tokenizer) -> Process:
    """Self-augmentation: the backward model writes an instruction for each document."""
    from bft.generation.base import Sampling
    from bft.parsers import parse_instruction
    from bft.prompts import backtranslation_prompt, render_chat

    settings = dict(params["sampling"])
    keep_unfinished = settings.pop("keep_unfinished", False)
    sampling = Sampling(**settings)
    model_key = params["model_key"]

    def process(shard: list[Record], index: int) -> list[Record]:
        prompts = [render_chat(tokenizer, backtranslation_prompt(d["text"]))[0] for d in shard]
        completions = backend.generate(prompts, sampling, shard_seed(params["run_seed"], "augment", index))
        return [
            {**d, "instruction": parse_instruction(c.text, c.finished or keep_unfinished), "backward_raw": c.text}
            | {"backward_finished": c.finished, "backward_model": model_key}
            for d, c in zip(shard, completions, strict=True)
        ]

    return process


def curate(params: dict[str, Any], backend, tokenizer) -> Process:
    """Self-curation: the judge scores each (instruction, document) pair."""
    from bft.curation.score import score_pairs

    cur = OmegaConf.create(params["curation"])

    def process(shard: list[Record], index: int) -> list[Record]:
        scored = score_pairs(shard, backend, tokenizer, cur, shard_seed(params["run_seed"], "curate", index))
        return [{**r, "judge_model": params["model_key"], "scoring": cur.scoring} for r in scored]

    return process


def rewrite(params: dict[str, Any], backend, tokenizer) -> Process:
    """The aligned rewriter turns each kept document into an answer to its instruction."""
    from bft.rewriter.rewrite import rewrite_pairs

    rewriter = OmegaConf.create(params["rewriter"])

    def process(shard: list[Record], index: int) -> list[Record]:
        seed = shard_seed(params["run_seed"], "rewrite", index)
        return rewrite_pairs(shard, backend, tokenizer, rewriter, seed, params["model_name"])

    return process


def answer(params: dict[str, Any], backend, tokenizer) -> Process:
    """Eval outputs: the model answers each instruction of the eval set."""
    from bft.generation.base import Sampling
    from bft.prompts import render_chat, with_tag

    sampling = Sampling(**params["sampling"])

    def process(shard: list[Record], index: int) -> list[Record]:
        prompts = [render_chat(tokenizer, with_tag(r["instruction"], params["tag"]))[0] for r in shard]
        completions = backend.generate(prompts, sampling, shard_seed(params["run_seed"], "eval", index))
        return [
            {
                "instruction": r["instruction"],
                "output": c.text.strip(),
                "generator": params["generator"],
                "dataset": r.get("dataset", params["eval_set"]),
            }
            for r, c in zip(shard, completions, strict=True)
        ]

    return process


def naming_records(process: Process) -> Process:
    """``process`` whose too-long-prompt error names the record (its id) instead of the prompt's place in a call:
    every processor builds one prompt per record, in order."""
    from bft.generation.base import PromptTooLongError

    def named(shard: list[Record], index: int) -> list[Record]:
        try:
            return process(shard, index)
        except PromptTooLongError as err:
            record = shard[err.index]
            name = record.get("id", repr(str(record.get("instruction", ""))[:60]))
            raise PromptTooLongError(f"record {name} of shard {index}: {err}", err.index) from None

    return named


PROCESSORS: dict[str, Callable[[dict[str, Any], Any, Any], Process]] = {
    "augment": augment,
    "curate": curate,
    "rewrite": rewrite,
    "answer": answer,
}
