"""The unit of work a generation worker runs, and the loop that claims and writes shards.

A :class:`ShardJob` holds only data (its generation task, ``bft.tasks``, and the task's typed settings, input file,
work folder, model reference, generation config, run seed), saved as ``<work>/workers/job.json``. Any number of
processes, started by any engine, run :func:`run_worker` on it: each walks the input file once, claims the next
shard nobody holds (a non-blocking file lock, which the OS releases if the process dies), skips shards already on
disk, and writes each shard atomically. A killed worker leaves its shard unwritten and unclaimed, so the next run
(or another worker) redoes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from bft.artifacts.shards import Record, iter_shards, parse_lines, shard_path
from bft.artifacts.store import JsonJobFile, write_json_atomic
from bft.data.io import write_jsonl_atomic
from bft.tasks import TASKS

log = logging.getLogger(__name__)


@dataclass
class ShardJob(JsonJobFile):
    task: str  # a key of bft.tasks.TASKS
    stage: str  # the stage's name, for messages
    source: str  # JSONL input file, read lazily
    work: str  # the stage's work folder (``<key>.partial``)
    shard_size: int
    model_name: str  # base model name / folder
    adapter: str | None  # LoRA adapter folder or None
    generation: dict[str, Any]  # the generation config (backend, dtype, batch sizes, vllm options)
    settings: Any  # the task's typed Settings (saved as dataclasses.asdict, loaded back as the Settings)
    run_seed: int  # with the task's seed namespace and the shard index, each shard's sampling seed
    threads: int | None = None  # torch threads in a worker process (None: torch's default)
    chat_template: list[str | None] | None = None  # (setting, config key) registered for model_name in the driver

    @property
    def folder(self) -> Path:
        return Path(self.work) / "workers"

    def __post_init__(self) -> None:
        expected = TASKS[self.task].settings
        if isinstance(self.settings, dict):  # loaded from job.json
            self.settings = expected(**self.settings)
        if not isinstance(self.settings, expected):
            given, wanted = (f"{t.__module__}.{t.__qualname__}" for t in (type(self.settings), expected))
            raise TypeError(f"{self.task}: settings are {given}, not {wanted}")


def stats_path(work: Path, index: int) -> Path:
    return work / "workers" / "stats" / f"shard-{index:05d}.json"


def build_backend(job: ShardJob):
    """The generation backend (and its tokenizer) for the job's model, as the stage itself would build it."""
    from omegaconf import OmegaConf

    from bft.models.chat_templates import register_chat_template
    from bft.pipeline.models import backend_for

    if job.chat_template is not None:  # a worker process starts with no registered template settings
        register_chat_template(job.model_name, *job.chat_template)
    from bft.generation.served import served_stage

    generation = OmegaConf.create(job.generation)
    if "server" in generation and served_stage(generation, job.stage):  # generation.server.stages lists this stage
        generation.backend = "served"
    built = backend_for(generation, job.model_name, job.adapter)
    log.info("%s: %s backend on %s", job.stage, generation.get("backend", "hf"), backend_device(built[0]))
    return built


def backend_device(backend) -> str:
    """Where a backend runs (``cpu``, ``cuda:0``, ...): recorded with each shard and in the stage's metrics."""
    return str(getattr(backend, "device", "unknown"))


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    return {k: v - before.get(k, 0) for k, v in after.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def process_shards(
    job: ShardJob,
    backend_and_tokenizer: tuple[Any, Any] | None = None,
    on_shard: Callable[[int], None] | None = None,
) -> tuple[int, tuple[Any, Any] | None]:
    """Claim and compute every shard of ``job`` that is neither on disk nor held by another worker.

    The backend is built on the first claimed shard (a worker with nothing left to do loads no model). Returns the
    number of shards this call computed and the backend it used (so an in-process caller can reuse it).
    """
    work = Path(job.work)
    claims = job.folder / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    stats_path(work, 0).parent.mkdir(parents=True, exist_ok=True)
    process = None
    done = 0
    for index, lines in iter_shards(Path(job.source), job.shard_size):
        target = shard_path(work, index)
        if target.exists():
            continue
        claim = FileLock(str(claims / f"shard-{index:05d}.lock"), timeout=0)
        try:
            claim.acquire()
        except Timeout:
            continue  # another worker is on it
        try:
            if target.exists():  # finished by another worker between our check and our claim
                continue
            if backend_and_tokenizer is None:
                backend_and_tokenizer = build_backend(job)
            backend, tokenizer = backend_and_tokenizer
            if process is None:
                process = task_process(job, backend, tokenizer)
            before = dict(backend.stats())
            started = time.perf_counter()
            result = process(parse_lines(lines), index)
            stats = _delta(dict(backend.stats()), before)
            stats.update(records=len(lines), wall_seconds=time.perf_counter() - started, device=backend_device(backend))
            write_json_atomic(stats_path(work, index), stats)  # before the shard: whoever sees the shard sees its stats
            write_jsonl_atomic(target, result)
            done += 1
        finally:
            claim.release()
        if on_shard is not None:
            on_shard(index)
    return done, backend_and_tokenizer


def task_process(job: ShardJob, backend, tokenizer) -> Callable[[list[Record], int], list[Record]]:
    """``process(records, shard_index) -> records``: the job's task on one shard, seeded by the run seed and the
    shard index alone. A too-long prompt's error names its record (its id): a task renders one prompt per record."""
    from bft.generation.base import PromptTooLongError

    task = TASKS[job.task]

    def process(shard: list[Record], index: int) -> list[Record]:
        try:
            return task.run(shard, job.settings, backend, tokenizer, task.shard_seed(job.run_seed, index))
        except PromptTooLongError as err:
            record = shard[err.index]
            name = record.get("id", repr(str(record.get("instruction", ""))[:60]))
            raise PromptTooLongError(f"record {name} of shard {index}: {err}", err.index) from None

    return process


def run_worker(job_path: str, rank: int = 0, count: int = 1) -> int:
    """What a worker process runs (submitit, Ray, or ``python -m bft.workers JOB``): only picklable arguments."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    job = ShardJob.load(job_path)
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    started = time.time()
    done, _ = process_shards(job)
    log.info("%s: worker %d/%d computed %d shards in %.1f s", job.stage, rank, count, done, time.time() - started)
    return done
