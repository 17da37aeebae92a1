"""Run a plan: compute or reuse each step's artifact, log it, and print the run summary."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bft.artifacts.store import Artifact, ArtifactStore
from bft.data.io import read_jsonl
from bft.logger.run_logger import RunLogger
from bft.pipeline.context import RunContext, StageReport
from bft.pipeline.memory import peak_rss_mb, release_memory
from bft.pipeline.plan import Step, build_plan

log = logging.getLogger(__name__)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def run_step(ctx: RunContext, step: Step) -> Artifact:
    upstream = {logical: ctx.artifacts[name] for logical, name in step.upstream.items()}
    started = time.time()

    def compute(work: Path):
        log.info("%s: computing (%s)", step.name, work.name.removesuffix(".partial"))
        return step.stage.compute(ctx, upstream, work)

    artifact = ctx.store.get_or_compute(step.stage.name, step.config, upstream, compute)
    seconds = time.time() - started
    if artifact.reused:
        log.info("%s: reused artifact %s", step.name, artifact.path)
    else:
        release_memory()
        log.info("%s: done in %.1f s, peak RSS so far %.0f MB", step.name, seconds, peak_rss_mb())
    counts = artifact.manifest.get("counts", {})
    ctx.reports.append(
        StageReport(
            step.name, artifact.key, artifact.reused, _count(counts.get("in")), _count(counts.get("out")), seconds, artifact.path
        )
    )
    ctx.logger.log_step(step.name, artifact, upstream, seconds)  # metrics, a W&B job per computed stage, lineage
    ctx.artifacts[step.name] = artifact
    return artifact


def _log_samples(ctx: RunContext) -> None:
    if not ctx.logger.enabled:
        return
    rewrite = ctx.artifacts.get("rewrite") or ctx.artifacts["baseline_data"]
    rows = read_jsonl(rewrite.file("generated.jsonl"))
    columns = ["id", "text", "instruction", "score", "output"]
    ctx.logger.log_table("samples", rows, columns)
    for name in [n for n in ctx.artifacts if n.startswith("curate_")]:
        histogram = ctx.artifacts[name].manifest["metrics"].get("score_histogram")
        if histogram:
            ctx.logger.log_histogram(f"{name}/score_histogram", histogram)
    ctx.logger.log_artifact(f"curated-{rewrite.key}", "dataset", rewrite.file("generated.jsonl"))
    final = ctx.artifacts.get("final_model")
    if final is not None:
        ctx.logger.log_artifact(f"model-{final.key}", "model", final.file("model"))


def run_pipeline(cfg: DictConfig, run_dir: Path) -> RunContext:
    from bft.models.chat_templates import configure_chat_templates

    configure_chat_templates(cfg)  # a model with no chat template and no setting fails here, before any work
    if cfg.generation.backend == "vllm":
        from bft.generation.vllm import check_vllm_config

        check_vllm_config(cfg.generation)  # placement values and the vllm install, before any work
    store = ArtifactStore(cfg.run.artifacts_dir)
    plan = build_plan(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    logger = RunLogger(cfg.logger, run_dir, config, name=cfg.run.name, tags=list(cfg.tags))
    ctx = RunContext(cfg=cfg, store=store, run_dir=run_dir, logger=logger)
    exit_code = 1
    try:
        for step in plan:
            run_step(ctx, step)
        _log_samples(ctx)
        ctx.summary = summarize(ctx)
        logger.summary(ctx.summary)
        (run_dir / "summary.json").write_text(json.dumps(ctx.summary, indent=2, default=str))
        exit_code = 0
    finally:
        logger.finish(exit_code)
    return ctx


def plan_table(cfg: DictConfig) -> list[dict[str, Any]]:
    """The steps a config would run, with their artifact keys and whether each is already in the store.

    Keys are derived without running anything: upstream keys come from the keys computed for earlier steps.
    """
    store = ArtifactStore(cfg.run.artifacts_dir)
    keys: dict[str, str] = {}
    rows = []
    for step in build_plan(cfg):
        upstream = {logical: keys[name] for logical, name in step.upstream.items()}
        key = store.key_for(step.stage.name, step.config, upstream)
        keys[step.name] = key
        cached = (store.path_for(step.stage.name, key) / "manifest.json").exists()
        rows.append(
            {
                "step": step.name,
                "stage": step.stage.name,
                "reads": dict(step.upstream),
                "writes": list(step.stage.writes),
                "key": key,
                "cached": cached,
            }
        )
    return rows


def print_plan(cfg: DictConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="plan (dry run)")
    for column in ("step", "reads", "writes", "artifact", "status"):
        table.add_column(column)
    for row in plan_table(cfg):
        table.add_row(
            row["step"],
            ", ".join(row["reads"].values()) or "-",
            ", ".join(row["writes"]),
            f"{row['stage']}/{row['key']}",
            "cached" if row["cached"] else "to compute",
        )
    Console(width=120).print(table)


def summarize(ctx: RunContext) -> dict[str, Any]:
    evaluate = ctx.artifacts["evaluate"].manifest["metrics"]
    cfg = ctx.cfg
    summary: dict[str, Any] = {
        "run": {
            "name": cfg.run.name,
            "method": cfg.method,
            "model": cfg.model.name,
            "seed_source": cfg.seed.source,
            "seed_size": cfg.seed.size,
            "corpus": cfg.corpus.source,
            "rewriter": cfg.rewriter.name,
            "rewriter_mode": cfg.rewriter.mode,
            "curation_enabled": cfg.curation.enabled,
            "curation_iterations": cfg.curation.iterations,
            "curation_scoring": cfg.curation.scoring,
            "curation_threshold": cfg.curation.threshold,
            "max_generated": cfg.data.max_generated,
            "baseline_file": cfg.data.baseline_file,
            "eval_set": cfg.eval.set,
            "tags": list(cfg.tags),
            "group": cfg.logger.group,
            "run_dir": str(ctx.run_dir),
        },
        "win_rate": evaluate.get("win_rate"),
        "standard_error": evaluate.get("standard_error"),
        "length_controlled_winrate": evaluate.get("length_controlled_winrate"),
        "discrete_win_rate": evaluate.get("discrete_win_rate"),
        "n": evaluate.get("n_total"),
        "n_generated": ctx.artifacts["train_data"].manifest["counts"].get("generated"),
        "annotator": ctx.cfg.eval.annotator,
        "reference": ctx.cfg.eval.reference,
        "curated_dataset": str((ctx.artifacts.get("rewrite") or ctx.artifacts["baseline_data"]).file("generated.jsonl")),
        "train_dataset": str(ctx.artifacts["train_data"].file("train.jsonl")),
        "final_model": str(ctx.artifacts["final_model"].file("model")),
        "leaderboard": str(ctx.artifacts["evaluate"].file("leaderboard.json")),
        "wandb_dir": str(ctx.logger.dir) if ctx.logger.dir else None,
        "stages": {
            r.stage: {"reused": r.reused, "in": r.records_in, "out": r.records_out, "seconds": round(r.seconds, 1), "key": r.key}
            for r in ctx.reports
        },
    }
    curations = {n: a.manifest["metrics"] for n, a in ctx.artifacts.items() if n.startswith("curate_")}
    summary["curation"] = {
        name: {
            k: m.get(k)
            for k in ("kept", "kept_fraction", "parse_failure_rate", "score_histogram", "kept_lengths", "dropped_lengths", "labels")
        }
        for name, m in curations.items()
    }
    return summary


def _lengths_text(acc: dict[str, Any]) -> str:
    """ ", kept/dropped mean chars 1045/1096" when the accounting has length statistics of both sides."""
    kept, dropped = acc.get("kept_lengths") or {}, acc.get("dropped_lengths") or {}
    if kept.get("mean_chars") is None or dropped.get("mean_chars") is None:
        return ""
    return f", kept/dropped mean chars {kept['mean_chars']:.0f}/{dropped['mean_chars']:.0f}"


def print_summary(ctx: RunContext) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bft run '{ctx.cfg.run.name}'")
    for column in ("stage", "status", "in", "out", "seconds", "artifact"):
        table.add_column(column)
    for r in ctx.reports:
        table.add_row(
            r.stage,
            "reused" if r.reused else "computed",
            str(r.records_in if r.records_in is not None else "-"),
            str(r.records_out if r.records_out is not None else "-"),
            f"{r.seconds:.1f}",
            f"{r.key}",
        )
    console = Console(width=120)
    console.print(table)
    s = ctx.summary
    for name, acc in s.get("curation", {}).items():
        console.print(
            f"{name}: kept {acc['kept']} ({acc['kept_fraction']:.1%}), parse failures "
            f"{acc['parse_failure_rate']:.1%}, histogram {acc['score_histogram']}"
            + _lengths_text(acc)
            + (f", labels {acc['labels']}" if acc.get("labels") else "")
        )
    se = s.get("standard_error")
    win = s.get("win_rate")
    console.print(
        f"AlpacaEval win rate vs {s['reference']} ({s['annotator']} judge, n={s['n']}): "
        + (f"{win:.2f}" if win is not None else "n/a")
        + (f" ± {se:.2f}" if se is not None else "")
    )
    console.print(f"curated dataset: {s['curated_dataset']}")
    console.print(f"final model/adapter: {s['final_model']}")
    console.print(f"W&B run folder: {s['wandb_dir'] or 'disabled'}")
    console.print(f"summary: {ctx.run_dir / 'summary.json'}")
