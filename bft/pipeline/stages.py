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

from bft.artifacts.shards import iter_outputs, shard_seed, write_jsonl_counted
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
    return shard_seed(cfg.run.seed, stage, index)


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
    from bft.data.corpus import clean_corpus, read_corpus

    loaded = read_corpus(ctx.cfg.corpus, on_error=ctx.cfg.data.on_error)
    docs, skipped = loaded.records, loaded.skipped
    kept, removed = clean_corpus(docs, ctx.cfg.corpus)
    if not kept:
        raise PipelineError(f"corpus: cleaning kept 0 of {len(docs)} documents (removed: {removed})")
    write_jsonl_atomic(work / "corpus.jsonl", kept)
    return StageOutput(counts={"in": len(docs), "out": len(kept), "removed": removed, "skipped_input": skipped})


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


def compute_augment(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.workers import run_stage, stage_job

    cfg = ctx.cfg
    params = {"sampling": _plain(cfg.generation.augment), "model_key": upstream["backward_model"].key}
    job = stage_job(cfg, "augment", upstream["corpus"].file("corpus.jsonl"), work, model_ref(upstream["backward_model"]), params)
    run = run_stage(job, cfg.workers)
    kept = write_jsonl_counted(work / "candidates.jsonl", (r for r in iter_outputs(work, run.n_shards) if r["instruction"]))
    return StageOutput(
        counts={"in": run.n_records, "out": kept, "empty_instructions": run.n_records - kept},
        metrics={"shards_reused": run.reused, **run.metrics},
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
    from bft.workers import run_stage, stage_job

    cfg = ctx.cfg
    cur = cfg.curation
    judge = upstream["judge"]
    params = {"curation": _plain(cur), "model_key": judge.key}
    job = stage_job(cfg, "curate", upstream["augment"].file("candidates.jsonl"), work, model_ref(judge), params)
    run = run_stage(job, cfg.workers)
    scored = list(iter_outputs(work, run.n_shards))
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
        backend, tokenizer = run.backend or backend_for(cfg.generation, *model_ref(judge))
        label_scores = score_pairs(pairs, backend, tokenizer, cur, _shard_seed(cfg, "labels", 0))
        label_keep = select(label_scores, cur.threshold, cur.top_k, cur.top_fraction)
        labels = binarize_labels([r["label"] for r in labelled])
        accounting["labels"] = selection_quality(labels, label_keep, [r.get("score") for r in label_scores])
    (work / "accounting.json").write_text(json.dumps(accounting, indent=2))
    return StageOutput(
        counts={"in": run.n_records, "out": len(curated)},
        metrics={**accounting, "shards_reused": run.reused, **run.metrics},
    )


def compute_rewrite(ctx: RunContext, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.workers import run_stage, stage_job

    cfg = ctx.cfg
    source = upstream["curated"]
    pairs_file = source.file("curated.jsonl" if source.stage.startswith("curate") else "candidates.jsonl")
    if cfg.rewriter.name == "none":
        pairs = read_jsonl(pairs_file)
        if not pairs:
            raise PipelineError(f"{source.stage}: 0 pairs left to train on; lower curation.threshold or use curation.top_fraction")
        n_in = len(pairs)
        generated = [{**p, "output": p["text"], "rewriter": "none"} for p in pairs]
        metrics: dict[str, Any] = {"shards_reused": 0}
    else:
        name, adapter = model_ref(upstream["rewriter"]) if "rewriter" in upstream else (cfg.rewriter.name, None)
        params = {"rewriter": _plain(cfg.rewriter), "model_name": name}
        run = run_stage(stage_job(cfg, "rewrite", pairs_file, work, (name, adapter), params), cfg.workers)
        if not run.n_records:
            raise PipelineError(f"{source.stage}: 0 pairs left to train on; lower curation.threshold or use curation.top_fraction")
        n_in = run.n_records
        generated = iter_outputs(work, run.n_shards)
        metrics = {"shards_reused": run.reused, **run.metrics}
    kept = write_jsonl_counted(work / "generated.jsonl", (r for r in generated if r["output"]))
    return StageOutput(counts={"in": n_in, "out": kept, "unparsed": n_in - kept}, metrics=metrics)


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
    from bft.workers import run_stage, stage_job

    cfg = ctx.cfg
    inputs = write_jsonl_counted(work / "workers" / "inputs.jsonl", load_eval_set(cfg.eval.set, cfg.eval.max_instances))
    sampling = {"temperature": cfg.eval.temperature, "top_p": cfg.eval.top_p, "max_new_tokens": cfg.eval.max_new_tokens}
    params = {"sampling": sampling, "tag": tag, "generator": generator, "eval_set": cfg.eval.set}
    run = run_stage(stage_job(cfg, "answer", work / "workers" / "inputs.jsonl", work, (name, adapter), params), cfg.workers)
    outputs = list(iter_outputs(work, run.n_shards))
    (work / "model_outputs.json").write_text(json.dumps(outputs, indent=2, ensure_ascii=False))
    return StageOutput(counts={"in": inputs, "out": len(outputs)}, metrics={"shards_reused": run.reused, **run.metrics})


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
