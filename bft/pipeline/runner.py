"""Run a plan: compute or reuse each step's artifact and log it; then log samples and write the summary."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bft.artifacts.store import Artifact, ArtifactStore
from bft.logger.run_logger import RunLogger
from bft.pipeline.context import RunContext, StageReport
from bft.pipeline.memory import peak_cuda_mb, peak_rss_mb, release_memory
from bft.pipeline.plan import Step, build_plan
from bft.pipeline.samples import log_samples
from bft.pipeline.summary import print_summary, summarize

__all__ = ["print_summary", "run_pipeline", "run_step"]
log = logging.getLogger(__name__)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def run_step(ctx: RunContext, step: Step) -> Artifact:
    """Compute (or reuse) one step's artifact from its slice and its upstream artifacts, and report it."""
    upstream = {logical: ctx.artifacts[name] for logical, name in step.upstream.items()}
    started = time.time()

    def compute(work: Path):
        log.info("%s: computing (%s)", step.name, work.name.removesuffix(".partial"))
        return step.stage.compute(step.slice, upstream, work)

    artifact = ctx.store.get_or_compute(step.stage.name, step.config, upstream, compute, writes=step.stage.writes)
    artifact.exports = dict(step.stage.exports)
    seconds = time.time() - started
    if artifact.reused:
        log.info("%s: reused artifact %s", step.name, artifact.path)
    else:
        release_memory()  # the stage's models are gone: their CPU and GPU memory goes back before the next stage
        gpu = peak_cuda_mb()
        gpu_text = f", peak GPU memory so far {gpu:.0f} MB" if gpu is not None else ""
        log.info("%s: done in %.1f s, peak RSS so far %.0f MB%s", step.name, seconds, peak_rss_mb(), gpu_text)
    counts = artifact.manifest.get("counts", {})
    report = StageReport(
        step.name, artifact.key, artifact.reused, _count(counts.get("in")), _count(counts.get("out")), seconds, artifact.path
    )
    ctx.reports.append(report)
    ctx.logger.log_step(step.name, artifact, upstream, seconds)  # metrics, a W&B job per computed stage, lineage
    ctx.artifacts[step.name] = artifact
    return artifact


def run_pipeline(cfg: DictConfig, run_dir: Path) -> RunContext:
    from bft.models.template_roles import configure_chat_templates

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
        log_samples(ctx)
        ctx.summary = summarize(ctx)
        logger.summary(ctx.summary)
        (run_dir / "summary.json").write_text(json.dumps(ctx.summary, indent=2, default=str))
        exit_code = 0
    finally:
        logger.finish(exit_code)
    return ctx
