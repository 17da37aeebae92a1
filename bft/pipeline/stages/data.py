"""Data stages: the seed pairs, the web corpus, a baseline dataset, and the final training set."""

from __future__ import annotations

import random
from pathlib import Path

from omegaconf import DictConfig

from bft.artifacts.store import Artifact, StageOutput
from bft.context_budget import PromptSpec
from bft.data.io import read_jsonl, write_jsonl_atomic
from bft.errors import NoPairsError, PipelineError
from bft.pipeline.stage import Stage
from bft.pipeline.stages.common import tagged_examples


def compute_seed(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.data.seed import load_seed

    records = load_seed(c.seed, seed=c.run.seed, on_error=c.data.on_error)
    write_jsonl_atomic(work / "seed.jsonl", records)
    return StageOutput(counts={"in": len(records), "out": len(records)})


def prompt_specs(c: DictConfig) -> list[PromptSpec]:
    """The generation prompts every corpus document goes into, each with its model, chat template and new tokens:
    backtranslation (backward model), rating (curation model, when curating) and rewrite (the rewriter or M0, in
    rewrite mode; distillation prompts hold no document). Instructions are budgeted at the augment stage's
    ``max_new_tokens``."""
    from bft.prompts import SCORE_PREFILL

    instruction = c.generation.augment.max_new_tokens
    specs = [PromptSpec("augment", c.backward_model.name, c.backward_model.chat_template, "backward_model.chat_template", instruction)]
    if c.curation.enabled:
        logprob = c.curation.scoring == "logprob"
        new = 1 if logprob else c.curation.max_new_tokens
        prefix = SCORE_PREFILL if logprob else ""
        curation = (c.curation_model.name, c.curation_model.chat_template, "curation_model.chat_template")
        specs.append(PromptSpec("rate", *curation, new, instruction, score_only=logprob, assistant_prefix=prefix))
    if c.rewriter.source != "none" and c.rewriter.mode == "rewrite":
        if c.rewriter.source == "seed_model":
            rewriter = (c.curation_model.name, c.curation_model.chat_template, "curation_model.chat_template")
        else:
            rewriter = (c.rewriter.name, c.rewriter.chat_template, "rewriter.chat_template")
        prefix = "[RES]" if c.rewriter.prefill_res_tag else ""
        specs.append(PromptSpec("rewrite", *rewriter, c.rewriter.max_new_tokens, instruction, assistant_prefix=prefix))
    return specs


def compute_corpus(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    """The cleaned web corpus, built by the datatrove pipeline of ``bft.data.corpus`` (readers, filters, MinHash),
    without the documents whose longest prompt would not fit its model's context (``bft.context_budget``)."""
    from omegaconf import OmegaConf

    from bft.context_budget import prompt_budgets
    from bft.data.corpus import build_corpus

    budgets = prompt_budgets(prompt_specs(c), c.generation.backend, c.generation.max_model_len)
    corpus = OmegaConf.to_container(c.corpus, resolve=True)
    counts = build_corpus(corpus, c.data.on_error, work / "corpus.jsonl", budgets)
    if not counts["out"]:
        raise PipelineError(f"corpus: cleaning kept 0 of {counts['in']} documents (removed: {counts['removed']})")
    return StageOutput(counts=counts)


def compute_baseline_data(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    """An existing instruction dataset (Alpaca-GPT4, ShareGPT, ...) in place of generated data."""
    from bft.data.io import read_records

    path = Path(c.data.baseline_file)
    result = read_records(path, required={"instruction": str, "output": str}, on_error=c.data.on_error)
    rows = [{**r, "id": r.get("id", f"{path.stem}-{i}")} for i, r in enumerate(result.records)]
    write_jsonl_atomic(work / "generated.jsonl", rows)
    return StageOutput(counts={"in": len(rows) + sum(result.skipped.values()), "out": len(rows), "skipped_input": result.skipped})


def compute_train_data(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    """Seed and generated pairs, each decontaminated against the eval instructions (one check for both)."""
    from bft.eval.decontaminate import count_reasons, decontaminate
    from bft.eval.sets import load_eval_set

    seed = read_jsonl(upstream["seed"].file("seed.jsonl"))
    generated = read_jsonl(upstream["generated"].export("generated"))
    if not generated:
        raise NoPairsError("train_data: the generated set is empty (nothing survived curation and rewriting)")
    eval_instructions = [r["instruction"] for r in load_eval_set(c.eval.set, c.eval.max_instances)]
    seed_kept, seed_dropped = decontaminate(seed, eval_instructions)
    kept, dropped = decontaminate(generated, eval_instructions)
    if c.data.max_generated is not None and len(kept) > c.data.max_generated:
        chosen = sorted(random.Random(c.run.seed).sample(range(len(kept)), c.data.max_generated))
        kept = [kept[i] for i in chosen]
    rows = [{**e, "origin": "seed"} for e in tagged_examples(seed_kept, c.sft.seed_tag)]
    rows += [
        {**e, "origin": "generated", "id": r.get("id"), "source_id": r.get("source_id")}
        for e, r in zip(tagged_examples(kept, c.sft.web_tag), kept, strict=True)
    ]
    all_dropped = [{**d, "origin": "seed"} for d in seed_dropped] + [{**d, "origin": "generated"} for d in dropped]
    write_jsonl_atomic(work / "train.jsonl", rows)
    write_jsonl_atomic(work / "decontaminated.jsonl", all_dropped)
    counts = {"in": len(seed) + len(generated), "out": len(rows), "seed": len(seed_kept), "generated": len(kept)}
    return StageOutput(
        counts={
            **counts,
            "decontaminated": count_reasons(all_dropped),
            "decontaminated_seed": count_reasons(seed_dropped),
            "decontaminated_generated": count_reasons(dropped),
        }
    )


SEED = Stage("seed", (), ("seed.jsonl",), ("seed", "run.seed", "data.on_error"), compute_seed, version=1)
# What the context budget reads: each prompt's model, chat template and new tokens, and the context's source.
_CONTEXT_BUDGET = (
    *(f"{role}.{key}" for role in ("backward_model", "curation_model") for key in ("name", "chat_template")),
    *(f"curation.{key}" for key in ("enabled", "scoring", "max_new_tokens")),
    *(f"rewriter.{key}" for key in ("source", "name", "chat_template", "mode", "max_new_tokens", "prefill_res_tag")),
    "generation.augment.max_new_tokens",
    "generation.backend",
    "generation.max_model_len",
)
CORPUS = Stage(
    "corpus", (), ("corpus.jsonl", "filters.json"), ("corpus", "data.on_error", *_CONTEXT_BUDGET), compute_corpus, version=1
)
BASELINE_DATA = Stage(
    "baseline_data",
    (),
    ("generated.jsonl",),
    ("data.baseline_file", "data.on_error"),
    compute_baseline_data,
    exports={"generated": "generated.jsonl"},
    version=1,
)
TRAIN_DATA = Stage(
    "train_data",
    ("seed", "generated"),
    ("train.jsonl", "decontaminated.jsonl"),
    ("sft.seed_tag", "sft.web_tag", "eval.set", "eval.max_instances", "data.max_generated", "run.seed"),
    compute_train_data,
    version=1,
)
