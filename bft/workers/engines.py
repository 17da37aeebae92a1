"""Start ``count`` workers on a saved :class:`~bft.workers.job.ShardJob` through an existing engine, and wait.

* ``submitit``: ``cluster=local`` runs local processes (submitit's LocalExecutor), ``cluster=slurm`` a Slurm array
  job (one task per worker; what it asks for: :mod:`bft.workers.slurm`), ``cluster=debug`` runs them one after
  another in this process. A refused submission is one line (sbatch's error); while the array waits its pending
  reason is logged, and past ``pending_timeout_s`` it is cancelled and the stage fails in one line. Ctrl-C or any
  failure while waiting cancels every job submitted.
* ``ray``: one Ray task per worker on the cluster at ``workers.ray.address`` (a local Ray when null).

Each worker runs :func:`bft.workers.job.run_worker` with only the job file's path, its rank and the count. While
they run, ``poll()`` is called every ``poll_seconds`` (the progress display). Returns one error text per failed
worker (empty when all succeeded).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bft.executors import _first_line, _require, make_executor
from bft.workers.job import run_worker

ENGINES = ("inprocess", "submitit", "ray")
log = logging.getLogger(__name__)


def run_submitit(
    job_path: Path,
    count: int,
    cluster: str,
    params: dict[str, Any],
    poll: Callable[[], None],
    poll_seconds: float,
    pending_timeout_s: float | None = None,
) -> list[str]:
    from bft.pipeline.context import PipelineError
    from bft.workers.slurm import submission_error

    executor = make_executor(job_path.parent / "submitit", cluster, params)
    try:
        with outside_any_slurm_array():
            jobs = executor.map_array(run_worker, [str(job_path)] * count, list(range(count)), [count] * count)
    except Exception as err:  # submitit wraps sbatch's refusal in a FailedJobError with the whole output
        if cluster != "slurm":
            raise
        raise PipelineError(
            f"workers=slurm: Slurm refused the job: {submission_error(err)} "
            "(check workers.partition, workers.gpus_per_task, workers.cpus_per_task, workers.mem_gb)"
        ) from None
    if cluster != "debug":
        try:
            _wait(jobs, cluster, poll, poll_seconds, pending_timeout_s)
        except BaseException:  # Ctrl-C, a job that cannot start, any failure here: leave nothing queued
            for job in jobs:
                job.cancel(check=False)
            log.warning("cancelled %s job %s", cluster, jobs[0].job_id.split("_")[0])
            raise
    errors = []
    for rank, job in enumerate(jobs):
        if not job.done():  # left the queue without a result (no accounting told submitit): its log says why
            log_file = Path(job.paths.stderr)
            why = _first_line(log_file.read_text(errors="replace")) if log_file.is_file() else "no log"
            errors.append(f"worker {rank} (job {job.job_id}, log {log_file}): ended without a result: {why}")
            continue
        try:
            job.result()
        except Exception as err:  # submitit re-raises the worker's error (or a FailedJobError with its log)
            errors.append(f"worker {rank} (job {job.job_id}, log {job.paths.stderr}): {_first_line(err)}")
    return errors


@contextlib.contextmanager
def outside_any_slurm_array():
    """Submit as if from outside a Slurm array: sbatch passes the environment on, and a single job submitted from
    an array task (a sweep job under hydra's submitit launcher) would inherit ``SLURM_ARRAY_*``, so submitit in it
    would look for the outer task's files and fail before running."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("SLURM_ARRAY_")}
    try:
        yield
    finally:
        os.environ.update(saved)


GONE_GRACE_S = 60.0  # a job out of squeue this long without its result has died (no accounting to say so)


def _wait(jobs: list, cluster: str, poll: Callable[[], None], poll_seconds: float, pending_timeout_s: float | None) -> None:
    from bft.pipeline.context import PipelineError
    from bft.workers.slurm import NEVER_STARTS, queue_state

    array = jobs[0].job_id.split("_")[0]
    started, reason, running, gone = time.monotonic(), None, cluster != "slurm", None
    while not all(job.done() for job in jobs):
        poll()
        if cluster == "slurm" and running:  # on a cluster without accounting submitit never learns of a crash
            if queue_state(array) is not None:
                gone = None
            elif (gone := gone or time.monotonic()) and time.monotonic() - gone > GONE_GRACE_S:
                return  # the results (or their absence) tell what happened
        if not running:
            state = queue_state(array)
            running = state is None or state[0] != "PENDING"
            if not running:
                if state[1] != reason:
                    reason = state[1]
                    log.info("Slurm job %s pending (%s)", array, reason)
                waited = time.monotonic() - started
                if reason in NEVER_STARTS:
                    raise PipelineError(
                        f"workers=slurm: job {array} can never start on this cluster: pending ({reason}); it is cancelled "
                        "(check workers.partition, workers.cpus_per_task, workers.mem_gb, workers.timeout_min)"
                    )
                if pending_timeout_s is not None and waited > pending_timeout_s:
                    raise PipelineError(
                        f"workers=slurm: job {array} did not start within {waited:.0f} s (workers.pending_timeout_min): "
                        f"pending ({reason}); it is cancelled, finished shards are kept"
                    )
        time.sleep(poll_seconds)


def run_ray(job_path: Path, count: int, options: dict[str, Any], poll: Callable[[], None], poll_seconds: float) -> list[str]:
    ray = _require("ray", "ray")
    options = dict(options)
    address = options.pop("address", None)
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)  # bft's console only
    remote = ray.remote(**{k: v for k, v in options.items() if v is not None})(run_worker)
    refs = [remote.remote(str(job_path), rank, count) for rank in range(count)]
    pending = list(refs)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_seconds)
        poll()
    errors = []
    for rank, ref in enumerate(refs):
        try:
            ray.get(ref)
        except Exception as err:  # RayTaskError wraps the worker's exception
            errors.append(f"worker {rank}: {_first_line(err)}")
    return errors
