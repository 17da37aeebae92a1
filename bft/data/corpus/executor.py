"""The engine that runs the corpus pipelines: datatrove's local, Slurm or Ray executor (``corpus.executor``).

``corpus.workers`` sets how many tasks run at once; the number of tasks (``corpus.tasks``, by default one per
input file) sets how the input is split, so the corpus is the same whatever the number of workers.
``corpus.executor_options`` passes engine arguments through (Slurm: ``partition`` and ``time`` are required,
plus e.g. ``cpus_per_task``, ``mem_per_cpu_gb``, ``qos``, ``sbatch_args``; Ray: ``cpus_per_task``, ...).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bft.config.validate import ConfigError

log = logging.getLogger(__name__)

EXECUTORS = ("local", "slurm", "ray")
SLURM_REQUIRED = ("partition", "time")
POLL_SECONDS = 30


def check_executor(executor: str, workers: int, options: dict[str, Any]) -> None:
    """One-line ConfigError for a bad executor choice, before any work."""
    if executor not in EXECUTORS:
        raise ConfigError(f"corpus.executor must be one of {EXECUTORS}, got {executor!r}")
    if workers < 1:
        raise ConfigError(f"corpus.workers must be >= 1, got {workers}")
    if executor == "slurm":
        missing = [key for key in SLURM_REQUIRED if key not in options]
        if missing:
            raise ConfigError(
                f"corpus.executor=slurm needs corpus.executor_options.{missing[0]} (e.g. +corpus.executor_options.{missing[0]}=...)"
            )


def make_executor(
    executor: str,
    pipeline: list,
    *,
    tasks: int,
    workers: int,
    logging_dir: str,
    options: dict[str, Any],
    depends: Any = None,
    job_name: str = "bft-corpus",
) -> Any:
    """The datatrove executor object for one pipeline (nothing is run or submitted here)."""
    check_executor(executor, workers, options)
    opts = dict(options)
    if executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(
            pipeline, tasks=tasks, workers=min(workers, tasks), logging_dir=logging_dir, depends=depends, **opts
        )
    if executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(
            pipeline,
            tasks=tasks,
            workers=workers,
            logging_dir=logging_dir,
            depends=depends,
            job_name=opts.pop("job_name", job_name),
            time=opts.pop("time"),
            partition=opts.pop("partition"),
            **opts,
        )
    from datatrove.executor.ray import RayPipelineExecutor

    return RayPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, depends=depends, **opts)


def run_chain(executor: Any, name: str, poll_seconds: float = POLL_SECONDS) -> None:
    """Run the last executor of a ``depends`` chain (which launches the others) and wait until all its tasks are
    complete (Slurm returns after submitting)."""
    executor.run()
    while incomplete := executor.get_incomplete_ranks(skip_completed=True):
        log.info("corpus: %s: %d/%d tasks still running", name, len(incomplete), executor.world_size)
        time.sleep(poll_seconds)
