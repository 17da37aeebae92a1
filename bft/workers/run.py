"""Drive one generation stage over its shards: in this process, or with many workers through an engine.

The driving process (the one running the pipeline, holding the stage's store lock) saves the job, starts the
workers, shows one progress display, checks that every shard is in, and only then lets the stage write its
outputs and the store publish the artifact. Worker-only files (``workers/``: job, claims, per-shard stats) are
removed once every shard is in, so the artifact's data does not depend on how many workers made it; the engine's
logs (submitit's stdout/stderr per task) stay in the artifact's ``logs/workers/``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bft.artifacts.shards import count_records, missing_shards, n_shards_for, remove_stale_temp_files
from bft.models.chat_templates import registered_setting
from bft.pipeline.context import PipelineError
from bft.tasks import GenerationTask
from bft.workers.engines import ENGINES, run_ray, run_submitit
from bft.workers.job import ShardJob, process_shards
from bft.workers.progress import StageProgress
from bft.workers.reuse import adopt_shards, input_hashes, job_digest, record_inputs

log = logging.getLogger(__name__)


@dataclass
class ShardRun:
    n_records: int
    n_shards: int
    reused: int  # shards already on disk when the stage started
    metrics: dict[str, Any] = field(default_factory=dict)  # summed backend counters, rate, workers
    backend: tuple[Any, Any] | None = None  # the in-process backend and tokenizer, when one was built


def _sum_stats(stats_dir: Path) -> dict[str, Any]:
    """Backend counters summed over this run's shards; text values (the device) listed once each, joined."""
    total: dict[str, float] = {}
    texts: dict[str, set[str]] = {}
    if stats_dir.is_dir():
        for path in sorted(stats_dir.glob("shard-*.json")):
            for key, value in json.loads(path.read_text()).items():
                if isinstance(value, str):
                    texts.setdefault(key, set()).add(value)
                elif key not in ("records", "wall_seconds"):
                    total[key] = total.get(key, 0) + value
    summed = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in total.items()}
    return summed | {k: ",".join(sorted(v)) for k, v in texts.items()}


def _threads(wcfg: DictConfig, count: int) -> int | None:
    if wcfg.threads_per_worker:
        return int(wcfg.threads_per_worker)
    if wcfg.engine == "submitit" and wcfg.cluster == "local" and count > 1:
        return max(1, (os.cpu_count() or 1) // count)  # local workers share this machine's cores
    return None


def run_stage(job: ShardJob, wcfg: DictConfig | None = None) -> ShardRun:
    """Compute every missing shard of ``job`` with the workers ``wcfg`` asks for; raise if any is still missing."""
    engine = wcfg.engine if wcfg is not None else "inprocess"
    if engine not in ENGINES:
        raise PipelineError(f"workers.engine: unknown engine '{engine}' (expected one of {', '.join(ENGINES)})")
    work = Path(job.work)
    (work / "shards").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(job.folder / "stats", ignore_errors=True)  # rates count only this run's shards
    n_records = count_records(Path(job.source))
    n_shards = n_shards_for(n_records, job.shard_size)
    missing = missing_shards(work, n_shards)
    digest, hashes = job_digest(job), input_hashes(Path(job.source), job.shard_size)
    record_inputs(work, digest, hashes)
    adopted = adopt_shards(work, digest, hashes, missing) if missing else 0  # a shorter corpus prefix's shards
    if adopted:
        log.info("%s: took %d finished shards from an earlier artifact made from the same inputs", job.stage, adopted)
        missing = missing_shards(work, n_shards)
    count = 1 if engine == "inprocess" else max(1, min(int(wcfg.count), len(missing)))
    job.threads = _threads(wcfg, count) if wcfg is not None else None
    path = job.save()
    progress = StageProgress(job.stage, work, n_records, job.shard_size)
    backend = None
    errors: list[str] = []
    if missing and engine == "inprocess":
        _, backend = process_shards(job, on_shard=progress.shard_done)
    elif missing and engine == "submitit":
        pending = wcfg.pending_timeout_min * 60 if wcfg.pending_timeout_min is not None else None
        params = submitit_parameters(job, wcfg)
        try:
            errors = run_submitit(path, count, wcfg.cluster, params, progress.poll, wcfg.poll_seconds, pending)
        finally:
            _keep_logs(job.folder / "submitit", work / "logs" / "workers")
    elif missing:
        options = OmegaConf.to_container(wcfg.ray, resolve=True) if wcfg.ray else {}
        errors = run_ray(path, count, options, progress.poll, wcfg.poll_seconds)
    rate = progress.close()
    still_missing = missing_shards(work, n_shards)
    if still_missing:
        first = f" ({errors[0]})" if errors else ""
        raise PipelineError(
            f"{job.stage}: {len(still_missing)} of {n_shards} shards missing after {count} {engine} worker(s){first}; "
            f"finished shards are kept in {work / 'shards'}, rerun the same command to compute the rest"
        )
    for error in errors:  # a worker failed after its shards were redone by another one
        log.warning("%s: %s", job.stage, error)
    metrics = {**_sum_stats(job.folder / "stats"), **rate, "workers": count, "engine": engine}
    remove_stale_temp_files(work)
    shutil.rmtree(job.folder, ignore_errors=True)
    return ShardRun(n_records, n_shards, n_shards - len(missing), metrics, backend)


def submitit_parameters(job: ShardJob, wcfg: DictConfig) -> dict[str, Any]:
    """submitit's parameters: for Slurm what the stage needs (:func:`bft.workers.slurm.slurm_parameters`)."""
    extra = OmegaConf.to_container(wcfg.submitit, resolve=True) if wcfg.submitit else {}
    if wcfg.cluster != "slurm":
        return {"name": f"bft-{job.stage}", **extra}
    from bft.pipeline.cost import model_params
    from bft.workers.slurm import slurm_parameters

    workers = {**OmegaConf.to_container(wcfg, resolve=True), "submitit": extra}
    return slurm_parameters(workers, job.generation, model_params(job.model_name), f"bft-{job.stage}")


def _keep_logs(source: Path, dest: Path) -> None:
    """Copy the engine's per-task logs into the artifact (they outlive the worker-only files, removed on success)."""
    logs = [p for p in source.rglob("*") if p.is_file() and p.suffix in (".out", ".err")] if source.is_dir() else []
    for path in logs:
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def stage_job(
    generation_cfg: DictConfig,
    run_seed: int,
    stage: str,
    task: GenerationTask,
    settings: Any,
    source: Path,
    work: Path,
    model: tuple[str, str | None],
) -> ShardJob:
    """The job of a generation stage: the engine settings (``generation``), the run seed, the task and its typed
    settings, its input file and model reference."""
    generation = OmegaConf.to_container(generation_cfg, resolve=True)
    return ShardJob(
        task=task.name,
        stage=stage,
        source=str(source),
        work=str(work),
        shard_size=int(generation_cfg.shard_size),
        model_name=model[0],
        adapter=model[1],
        generation=generation,
        settings=settings,
        run_seed=int(run_seed),
        chat_template=list(registered_setting(model[0])),
    )
