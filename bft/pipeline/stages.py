"""The pipeline's stages. Each declares what it reads (upstream stages) and writes (files), the slice of the
config that determines its output (hashed into its artifact key), and a compute function.

Stage order: seed -> corpus -> backward_model -> augment -> seed_model -> curate_0 [-> curation_model_i ->
curate_i]* -> rewrite -> train_data -> final_model -> eval_outputs (+ base_outputs) -> evaluate.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bft.artifacts.shards import run_sharded
from bft.artifacts.store import Artifact, StageOutput
from bft.data.io import read_jsonl, write_jsonl_atomic
from bft.pipeline.context import PipelineError, RunContext
from bft.pipeline.models import backend_for, model_ref

log = logging.getLogger(__name__)
Record = dict[str, Any]
Compute = Callable[[RunContext, dict[str, Artifact], Path], StageOutput]


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    compute: Compute


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _generation_key(cfg: DictConfig) -> dict[str, Any]:
    return {k: _plain(cfg.generation[k]) for k in ("backend", "dtype", "batch_size", "max_batch_tokens", "shard_size")}


def _training_key(cfg: DictConfig, stage: str) -> dict[str, Any]:
    return {
        "model": _plain(cfg.model),
        "sft": _plain(cfg.sft[stage]),
        "peft": _plain(cfg.peft),
        "precision": cfg.trainer.precision,
        "seed": cfg.run.seed,
    }


def _shard_seed(cfg: DictConfig, stage: str, index: int) -> int:
    return (cfg.run.seed * 1_000_003 + sum(map(ord, stage)) * 7919 + index) % (2**31)


# ----------------------------------------------------------------------------------------------- data stages


def _write_seed(ctx: RunContext, work: Path, seed_cfg: DictConfig) -> StageOutput:
    from bft.data.seed import load_seed

    records = load_seed(seed_cfg, seed=ctx.cfg.run.seed, on_error=ctx.cfg.data.on_error)
    write_jsonl_atomic(work / "seed.jsonl", records)
    return StageOutput(counts={"in": len(records), "out": len(records)})


def compute_seed(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    return _write_seed(ctx, work, ctx.cfg.seed)


def compute_full_seed(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    """The whole seed set (``seed.size`` ignored): the backward model's data when ``seed.size_scope=forward``."""
    return _write_seed(ctx, work, OmegaConf.merge(ctx.cfg.seed, {"size": None, "size_scope": "all"}))


def compute_corpus(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.data.corpus import build_corpus

    counts = build_corpus(OmegaConf.to_object(ctx.cfg.corpus), ctx.cfg.data.on_error, work / "corpus.jsonl")
    if not counts["out"]:
        raise PipelineError(f"corpus: cleaning kept 0 of {counts['in']} documents (removed: {counts['removed']})")
    return StageOutput(counts=counts)


# ------------------------------------------------------------------------------------------- training stages


def _train(ctx: RunContext, examples: list[Record], work: Path, stage: str, what: str) -> StageOutput:
    from bft.sft.train import train_sft

    if not examples:
        raise PipelineError(f"{what}: no training examples")
    result = train_sft(
        examples,
        ctx.cfg.model.name,
        work,
        OmegaConf.to_object(ctx.cfg.sft[stage]),
        OmegaConf.to_object(ctx.cfg.peft),
        OmegaConf.to_object(ctx.cfg.trainer),
        seed=ctx.cfg.run.seed,
        model_dtype=ctx.cfg.model.dtype,
    )
    return StageOutput(
        counts={"in": len(examples), "out": len(examples)},
        metrics=dict(result.metrics),
        extra={"base_model": ctx.cfg.model.name, "is_adapter": result.is_adapter},
    )


def seed_examples(cfg: DictConfig, seed: list[Record]) -> list[Record]:
    from bft.prompts import with_tag

    return [{"prompt": with_tag(r["instruction"], cfg.sft.seed_tag), "completion": r["output"]} for r in seed]


def web_examples(cfg: DictConfig, generated: list[Record]) -> list[Record]:
    from bft.prompts import with_tag

    return [{"prompt": with_tag(r["instruction"], cfg.sft.web_tag), "completion": r["output"]} for r in generated]


def compute_backward_model(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.prompts import backtranslation_prompt

    seed = read_jsonl(upstream["seed"].file("seed.jsonl"))
    examples = [{"prompt": backtranslation_prompt(r["output"]), "completion": r["instruction"]} for r in seed]
    return _train(ctx, examples, work, "backward", "backward model")


def compute_seed_model(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    seed = read_jsonl(upstream["seed"].file("seed.jsonl"))
    return _train(ctx, seed_examples(ctx.cfg, seed), work, "seed", "seed model")


def compute_curation_model(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    """Humpback's M_i: the base model fine-tuned on seed + the pairs kept by M_{i-1}."""
    seed = read_jsonl(upstream["seed"].file("seed.jsonl"))
    kept = [{**r, "output": r["text"]} for r in read_jsonl(upstream["curated"].file("curated.jsonl"))]
    return _train(ctx, seed_examples(ctx.cfg, seed) + web_examples(ctx.cfg, kept), work, "seed", "curation model")


def compute_final_model(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    train = read_jsonl(upstream["train_data"].file("train.jsonl"))
    examples = [{"prompt": r["prompt"], "completion": r["completion"]} for r in train]
    return _train(ctx, examples, work, "final", "final model")


# ----------------------------------------------------------------------------------------- generation stages


def _progress(stage: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        log.info("%s: shard %d/%d", stage, done, total)

    return report


def compute_augment(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.generation.base import Sampling
    from bft.parsers import parse_instruction
    from bft.prompts import backtranslation_prompt, render_chat

    cfg = ctx.cfg
    docs = read_jsonl(upstream["corpus"].file("corpus.jsonl"))
    backend, tokenizer = backend_for(cfg.generation, *model_ref(upstream["backward_model"]))
    aug = cfg.generation.augment
    sampling = Sampling(temperature=aug.temperature, top_p=aug.top_p, max_new_tokens=aug.max_new_tokens)

    def process(shard: list[Record], index: int) -> list[Record]:
        prompts = [render_chat(tokenizer, backtranslation_prompt(d["text"]))[0] for d in shard]
        completions = backend.generate(prompts, sampling, _shard_seed(cfg, "augment", index))
        return [
            {**d, "instruction": parse_instruction(c.text), "backward_raw": c.text, "backward_model": upstream["backward_model"].key}
            for d, c in zip(shard, completions, strict=True)
        ]

    records, reused = run_sharded(docs, work, cfg.generation.shard_size, process, _progress("augment"))
    candidates = [r for r in records if r["instruction"]]
    write_jsonl_atomic(work / "candidates.jsonl", candidates)
    return StageOutput(
        counts={"in": len(docs), "out": len(candidates), "empty_instructions": len(records) - len(candidates)},
        metrics={"shards_reused": reused, **backend.stats()},
    )


def labels_path(name: str) -> Path:
    """``curation.labels``: a JSONL path, or ``embedded`` for the 20 hand-labelled pairs shipped with bft."""
    if name == "embedded":
        from bft.data.embedded import embedded_file

        return Path(str(embedded_file("labels.jsonl")))
    return Path(name)


def compute_curate(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.curation.metrics import binarize_labels, curation_accounting, selection_quality
    from bft.curation.score import score_pairs
    from bft.curation.select import select

    cfg = ctx.cfg
    cur = cfg.curation
    candidates = read_jsonl(upstream["augment"].file("candidates.jsonl"))
    judge = upstream["judge"]
    backend, tokenizer = backend_for(cfg.generation, *model_ref(judge))

    def process(shard: list[Record], index: int) -> list[Record]:
        scored = score_pairs(shard, backend, tokenizer, cur, _shard_seed(cfg, "curate", index))
        return [{**r, "judge_model": judge.key, "scoring": cur.scoring} for r in scored]

    scored, reused = run_sharded(candidates, work, cfg.generation.shard_size, process, _progress("curate"))
    keep = select(scored, cur.threshold, cur.top_k, cur.top_fraction)
    for record, kept in zip(scored, keep, strict=True):
        record["kept"] = kept
    write_jsonl_atomic(work / "scored.jsonl", scored)
    curated = [r for r in scored if r["kept"]]
    write_jsonl_atomic(work / "curated.jsonl", curated)
    accounting = curation_accounting(scored, keep)
    if cur.labels:
        from bft.data.io import read_records

        labelled = read_records(labels_path(cur.labels), required={"instruction": str, "output": str}).records
        pairs = [{"instruction": r["instruction"], "text": r["output"]} for r in labelled]
        label_scores = score_pairs(pairs, backend, tokenizer, cur, _shard_seed(cfg, "labels", 0))
        label_keep = select(label_scores, cur.threshold, cur.top_k, cur.top_fraction)
        labels = binarize_labels([r["label"] for r in labelled])
        accounting["labels"] = selection_quality(labels, label_keep, [r.get("score") for r in label_scores])
    (work / "accounting.json").write_text(json.dumps(accounting, indent=2))
    return StageOutput(
        counts={"in": len(candidates), "out": len(curated)},
        metrics={**accounting, "shards_reused": reused, **backend.stats()},
    )


def compute_rewrite(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.rewriter.rewrite import rewrite_counts, rewrite_pairs

    cfg = ctx.cfg
    source = upstream["curated"]
    pairs = read_jsonl(source.file("curated.jsonl" if source.stage.startswith("curate") else "candidates.jsonl"))
    if not pairs:
        raise PipelineError(f"{source.stage}: 0 pairs left to train on; lower curation.threshold or use curation.top_fraction")
    if cfg.rewriter.name == "none":
        generated = [{**p, "output": p["text"], "rewriter": "none"} for p in pairs]
        reused = 0
        stats: dict[str, Any] = {}
    else:
        name, adapter = model_ref(upstream["rewriter"]) if "rewriter" in upstream else (cfg.rewriter.name, None)
        backend, tokenizer = backend_for(cfg.generation, name, adapter)

        def process(shard: list[Record], index: int) -> list[Record]:
            return rewrite_pairs(shard, backend, tokenizer, cfg.rewriter, _shard_seed(cfg, "rewrite", index), name)

        generated, reused = run_sharded(pairs, work, cfg.generation.shard_size, process, _progress("rewrite"))
        stats = backend.stats()
    kept = [r for r in generated if r["output"]]
    write_jsonl_atomic(work / "generated.jsonl", kept)
    return StageOutput(
        counts={"in": len(pairs), "out": len(kept), "dropped": len(generated) - len(kept), **rewrite_counts(generated)},
        metrics={"shards_reused": reused, **stats},
    )


def compute_baseline_data(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    """An existing instruction dataset (Alpaca-GPT4, ShareGPT, ...) in place of generated data."""
    from bft.data.io import read_records

    path = Path(ctx.cfg.data.baseline_file)
    result = read_records(path, required={"instruction": str, "output": str}, on_error=ctx.cfg.data.on_error)
    rows = [{**r, "id": r.get("id", f"{path.stem}-{i}")} for i, r in enumerate(result.records)]
    write_jsonl_atomic(work / "generated.jsonl", rows)
    return StageOutput(counts={"in": len(rows) + sum(result.skipped.values()), "out": len(rows), "skipped_input": result.skipped})


def compute_train_data(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.eval.decontaminate import count_reasons, decontaminate
    from bft.eval.sets import load_eval_set

    cfg = ctx.cfg
    seed = read_jsonl(upstream["seed"].file("seed.jsonl"))
    generated = read_jsonl(upstream["generated"].file("generated.jsonl"))
    if not generated:
        raise PipelineError("train_data: the generated set is empty (nothing survived curation and rewriting)")
    eval_instructions = [r["instruction"] for r in load_eval_set(cfg.eval.set, cfg.eval.max_instances)]
    kept, dropped = decontaminate(generated, eval_instructions)
    if cfg.data.max_generated is not None and len(kept) > cfg.data.max_generated:
        chosen = sorted(random.Random(cfg.run.seed).sample(range(len(kept)), cfg.data.max_generated))
        kept = [kept[i] for i in chosen]
    rows = [{**e, "origin": "seed"} for e in seed_examples(cfg, seed)]
    rows += [
        {**e, "origin": "generated", "id": r.get("id"), "source_id": r.get("source_id")}
        for e, r in zip(web_examples(cfg, kept), kept, strict=True)
    ]
    write_jsonl_atomic(work / "train.jsonl", rows)
    write_jsonl_atomic(work / "decontaminated.jsonl", dropped)
    return StageOutput(
        counts={
            "in": len(seed) + len(generated),
            "out": len(rows),
            "seed": len(seed),
            "generated": len(kept),
            "decontaminated": count_reasons(dropped),
        },
    )


def _answer_eval_set(ctx: RunContext, work: Path, name: str, adapter: str | None, tag: str | None, generator: str) -> StageOutput:
    from bft.eval.sets import load_eval_set
    from bft.generation.base import Sampling
    from bft.prompts import render_chat, with_tag

    cfg = ctx.cfg
    rows = load_eval_set(cfg.eval.set, cfg.eval.max_instances)
    backend, tokenizer = backend_for(cfg.generation, name, adapter)
    sampling = Sampling(temperature=cfg.eval.temperature, top_p=cfg.eval.top_p, max_new_tokens=cfg.eval.max_new_tokens)

    def process(shard: list[Record], index: int) -> list[Record]:
        prompts = [render_chat(tokenizer, with_tag(r["instruction"], tag))[0] for r in shard]
        completions = backend.generate(prompts, sampling, _shard_seed(cfg, "eval", index))
        return [
            {
                "instruction": r["instruction"],
                "output": c.text.strip(),
                "generator": generator,
                "dataset": r.get("dataset", cfg.eval.set),
            }
            for r, c in zip(shard, completions, strict=True)
        ]

    outputs, reused = run_sharded(rows, work, cfg.generation.shard_size, process, _progress("eval outputs"))
    (work / "model_outputs.json").write_text(json.dumps(outputs, indent=2, ensure_ascii=False))
    return StageOutput(counts={"in": len(rows), "out": len(outputs)}, metrics={"shards_reused": reused, **backend.stats()})


def compute_eval_outputs(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    name, adapter = model_ref(upstream["final_model"])
    generator = f"bft-{ctx.cfg.run.name}-{upstream['final_model'].key}"
    return _answer_eval_set(ctx, work, name, adapter, ctx.cfg.eval.inference_tag, generator)


def compute_base_outputs(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    return _answer_eval_set(ctx, work, ctx.cfg.model.name, None, None, f"base-{Path(ctx.cfg.model.name).name}")


def reference_outputs(cfg: DictConfig, upstream: dict[str, Artifact]) -> list[Record]:
    from bft.eval.sets import load_eval_set

    if cfg.eval.reference == "base":
        return json.loads(upstream["base_outputs"].file("model_outputs.json").read_text())
    if cfg.eval.reference == "dataset":
        return load_eval_set(cfg.eval.set, cfg.eval.max_instances)
    path = Path(cfg.eval.reference)
    candidates = [path, path / "model_outputs.json", path / "eval" / "model_outputs.json"]
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text())
    raise PipelineError(f"eval.reference: no model_outputs.json at {path} (use base, dataset or a run folder)")


def compute_evaluate(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.eval.score import score_outputs

    cfg = ctx.cfg
    outputs = json.loads(upstream["eval_outputs"].file("model_outputs.json").read_text())
    references = reference_outputs(cfg, upstream)
    (work / "model_outputs.json").write_text(json.dumps(outputs, indent=2, ensure_ascii=False))
    (work / "reference_outputs.json").write_text(json.dumps(references, indent=2, ensure_ascii=False))
    result = score_outputs(
        outputs,
        references,
        cfg.eval.annotator,
        work,
        judge_model=cfg.eval.judge_model,
        seed=cfg.run.seed,
        lc_weights_dir=cfg.eval.lc_weights_dir,
    )
    return StageOutput(counts={"in": len(outputs), "out": len(outputs)}, metrics=dict(result))
