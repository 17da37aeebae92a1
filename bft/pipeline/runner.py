"""Run a plan: compute or reuse each step's artifact and log it; then log samples and write the summary."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bft.artifacts.provenance import origin_note
from bft.artifacts.store import Artifact, ArtifactStore
from bft.errors import NoPairsError
from bft.logger.run_logger import RunLogger
from bft.pipeline.context import RunContext, StageReport
from bft.pipeline.memory import long_lived_objects_frozen, peak_cuda_mb, peak_rss_mb, release_memory
from bft.pipeline.plan import Step, build_plan
from bft.pipeline.samples import log_samples
from bft.pipeline.summary import print_summary, summarize
from bft.pipeline.target import Round, first_budget, next_budget, target_summary, with_budget

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

    artifact = ctx.store.get_or_compute(
        step.stage.name, step.config, upstream, compute, writes=step.stage.writes, version=step.stage.version
    )
    artifact.exports = dict(step.stage.exports)
    seconds = time.time() - started
    if artifact.reused:
        note = origin_note(artifact.manifest)  # an artifact made by other code, reused: its stage version is the same
        log.info("%s: reused artifact %s%s", step.name, artifact.path, f" ({note})" if note else "")
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


def _round(ran: dict[str, Artifact], budget: int, plan: list[Step]) -> Round:
    """The figures of a round from the artifacts of the steps it ran (all up to train_data, or fewer when no pair
    was left to rewrite or train on)."""
    counts = {name: artifact.manifest.get("counts", {}) for name, artifact in ran.items()}
    filters = ran["corpus"].file("filters.json")
    tasks = json.loads(filters.read_text()).get("tasks", 1) if filters.is_file() else 1
    curates = [s.name for s in plan if s.name.startswith("curate_")]

    def out(name: str, key: str = "out") -> int | None:
        return _count(counts.get(name, {}).get(key))

    funnel = {
        "corpus kept": out("corpus"),
        "candidates": out("augment"),
        **{f"kept by {name}": out(name) for name in curates},
        "answers": out("rewrite"),
        "after decontamination": out("train_data", "generated"),
    }
    return Round(budget, int(out("corpus", "in") or 0), int(tasks), funnel, int(out("train_data", "generated") or 0))


def _label_round(ctx: RunContext, first: int, number: int) -> None:
    for report in ctx.reports[first:]:  # every round stays in the table, under its number
        report.stage = f"{report.stage} (round {number})"


def run_plan(ctx: RunContext) -> None:
    """Run every step of the config's plan. With ``data.max_generated`` set, the steps up to train_data run in rounds
    over a longer and longer prefix of the corpus until the generated pairs reach the target or the corpus (or
    ``corpus.max_documents``) runs out (``bft.pipeline.target``); the rest runs once, on the last round's data."""
    budget = first_budget(ctx.cfg)
    if budget is None:
        for step in build_plan(ctx.cfg):
            run_step(ctx, step)
        return
    rounds: list[Round] = []
    while True:
        plan = build_plan(with_budget(ctx.cfg, budget))
        first = len(ctx.reports)
        cut = next(i for i, s in enumerate(plan) if s.name == "train_data") + 1
        target = ctx.cfg.data.max_generated
        log.info("data target %d generated pairs: round %d reads up to %d documents", target, len(rounds) + 1, budget)
        ran: dict[str, Artifact] = {}
        empty: NoPairsError | None = None
        try:
            for step in plan[:cut]:
                ran[step.name] = run_step(ctx, step)
        except NoPairsError as err:  # nothing kept in this prefix: read a longer one, if there is one
            empty = err
        rounds.append(_round(ran, budget, plan))
        budget, reason = next_budget(ctx.cfg, rounds)
        if budget is None and empty is not None:
            raise empty
        if budget is None:
            break
        _label_round(ctx, first, len(rounds))
    ctx.target = target_summary(ctx.cfg, rounds, reason)
    if len(rounds) > 1:
        _label_round(ctx, first, len(rounds))
    for step in plan[cut:]:
        run_step(ctx, step)


def run_pipeline(cfg: DictConfig, run_dir: Path) -> RunContext:
    from bft.data.remote import check_local_inputs
    from bft.models.template_roles import configure_chat_templates

    reads_corpus = any(step.stage.name == "corpus" for step in build_plan(cfg))
    check_local_inputs(cfg.corpus, cfg.seed, reads_corpus)  # the local mirrors and URL lists named, before any work
    configure_chat_templates(cfg)  # a model with no chat template and no setting fails here, before any work
    if cfg.generation.backend == "vllm":
        from bft.generation.vllm import check_vllm_config

        check_vllm_config(cfg.generation)  # placement values and the vllm install, before any work
    store = ArtifactStore(cfg.run.artifacts_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    logger = RunLogger(cfg.logger, run_dir, config, name=cfg.run.name, tags=list(cfg.tags))
    ctx = RunContext(cfg=cfg, store=store, run_dir=run_dir, logger=logger)
    exit_code = 1
    try:
        with long_lived_objects_frozen():  # the collections after each stage walk only what the stages made
            run_plan(ctx)
            log_samples(ctx)
            ctx.summary = summarize(ctx)
        logger.summary(ctx.summary)
        (run_dir / "summary.json").write_text(json.dumps(ctx.summary, indent=2, default=str))
        exit_code = 0
    finally:
        logger.finish(exit_code)
    return ctx
