"""Training as its own launched job: ``python -m bft.sft.launch <out_dir>/launch/job.json``.

Why: a training stage on several devices needs one process per device, and only training may run on every rank.
The pipeline process computes everything else once; for a training stage that is not a single CPU process it
writes a :class:`TrainJob` (the examples and every setting ``train_sft`` takes), launches this module, waits for
it, and then publishes the stage. So:

* the pipeline's own process never joins a process group, and never re-runs itself per rank (Lightning's
  launcher re-runs the command that started it: here that is this entry point, not the ``bft`` CLI);
* no training rank touches the artifact store: the store lock is held by the pipeline process, which only
  waits for the job (no rank waits on a lock held by a rank it must synchronise with);
* generation engines and training never share a process: GPU memory a vLLM engine holds in the pipeline process
  is not the training's (``launcher=auto`` launches every GPU training, also on one device).

Launchers (``trainer.launcher``):

* ``local``: one process on this machine running this module; Lightning's own launcher (``_SubprocessScriptLauncher``)
  starts the other ``devices - 1`` ranks with the same command. The job runs in its own session, so whatever is
  left of it when it ends (or when the pipeline is interrupted) is killed as a group.
* ``slurm``: one Slurm job through submitit (``bft.executors.make_executor``) with ``num_nodes`` nodes and
  one task per device; Lightning reads the ranks from Slurm (``SLURMEnvironment``). ``trainer.slurm`` holds the
  executor parameters (``slurm_partition``, ``timeout_min``, ...).
* ``inprocess``: ``train_sft`` in the pipeline process (one process only); ``auto`` picks it for one CPU device
  and ``local`` for everything else.

Results: rank 0 writes ``result.json``; a rank that fails writes ``error-<pid>.txt`` (its exception line, then
the traceback) and exits 1, and the pipeline raises :class:`TrainingJobError` with the first failure's exception
line. Checkpoints (``checkpoints/last.ckpt``) are in the stage's work folder, so the same command resumes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bft.artifacts.store import JsonJobFile
from bft.config.schema import PeftConfig, SFTStageConfig, TrainerConfig
from bft.errors import BftError
from bft.sft.launchers import resolve_launcher, slurm_parameters

log = logging.getLogger(__name__)

LAUNCH_DIR = "launch"  # under the stage's work folder; removed once the stage succeeded
RESULT_FILE = "result.json"
# Variables that tell torch / Lightning which rank a process is: the pipeline's own (it may have been started under
# srun or torchrun) must not reach the job, whose ranks come from its launcher.
_RANK_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
)
_RANK_PREFIXES = ("SLURM_", "TORCHELASTIC_", "PMI_", "OMPI_COMM_WORLD_")
FINISH_GRACE_S = 60.0  # after rank 0 exits cleanly, how long the other ranks of a local job may take to exit


class TrainingJobError(BftError, RuntimeError):
    """A launched training job failed (one line: the failing rank's exception)."""


@dataclass
class TrainJob(JsonJobFile):
    """Everything ``train_sft`` needs, as plain data (``<out_dir>/launch/job.json``)."""

    examples: str  # JSONL of {"prompt", "completion"}
    base_model: str
    out_dir: str
    stage: dict[str, Any]
    peft: dict[str, Any]
    trainer: dict[str, Any]
    seed: int
    model_dtype: str = "auto"
    chat_template: list[str | None] | None = None  # (setting, config key) the pipeline registered for base_model
    verbose: bool = False

    @property
    def folder(self) -> Path:
        return Path(self.out_dir) / LAUNCH_DIR


# ------------------------------------------------------------------------------------------ which launcher


def job_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without rank variables (see :data:`_RANK_VARIABLES`)."""
    env = dict(os.environ if environ is None else environ)
    for name in list(env):
        if name in _RANK_VARIABLES or name.startswith(_RANK_PREFIXES):
            del env[name]
    return env


# ------------------------------------------------------------------------------------------ pipeline side


def _error_lines(folder: Path) -> list[str]:
    """The exception line of each failed rank, earliest failure first (later ones usually follow from it)."""
    files = sorted(folder.glob("error-*.txt"), key=lambda p: p.stat().st_mtime)
    return [(p.read_text().splitlines() or ["(empty error file)"])[0] for p in files]


def _job_error(job: TrainJob, what: str, detail: str | None) -> TrainingJobError:
    errors = _error_lines(job.folder)
    first = errors[0] if errors else detail or "no error was recorded"
    return TrainingJobError(
        f"{what}: training failed ({first}); finished checkpoints are kept in {Path(job.out_dir) / 'checkpoints'}, "
        f"rerun the same command to resume (log: {job.folder})"
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a reused id owned by someone else
        return False
    return True


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_local(job_path: Path, job: TrainJob) -> int:
    """Run the job on this machine (this module as the rank-0 process) and wait; return its exit code."""
    stdout = open(job.folder / "stdout.log", "ab")  # noqa: SIM115 - closed below; stderr (bars, warnings) stays on the console
    proc = subprocess.Popen(
        [sys.executable, "-m", "bft.sft.launch", str(job_path)],
        env=job_environment(),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        start_new_session=True,  # its own process group: the ranks Lightning starts are killed with it
    )
    try:
        code = proc.wait()
        deadline = time.monotonic() + (FINISH_GRACE_S if code == 0 else 0)
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        return code
    finally:
        _kill_group(proc.pid)  # ranks left behind by a failed rank 0, or everything on KeyboardInterrupt
        stdout.close()


def run_slurm(job_path: Path, job: TrainJob, stage_name: str) -> str | None:
    """Submit the job to Slurm through submitit (one task per device) and wait; return an error text or None."""
    from bft.executors import _first_line, make_executor

    trainer = TrainerConfig(**job.trainer)
    executor = make_executor(job.folder / "slurm", "slurm", slurm_parameters(trainer, stage_name))
    submitted = executor.submit(run_job, str(job_path))
    log.info("%s: training submitted as Slurm job %s (logs %s)", stage_name, submitted.job_id, submitted.paths.stderr)
    while not submitted.done():
        time.sleep(10)
    try:
        submitted.results()
    except Exception as err:  # submitit re-raises a task's error, or FailedJobError with its log
        return _first_line(err)
    return None


def launch_training(job: TrainJob, stage_name: str):
    """Run ``job`` with its trainer's launcher (``local`` or ``slurm``); return rank 0's :class:`TrainResult`."""
    from bft.sft.result import TrainResult

    trainer = TrainerConfig(**job.trainer)
    launcher = resolve_launcher(trainer)
    for stale in [*job.folder.glob("error-*.txt"), job.folder / RESULT_FILE]:
        stale.unlink(missing_ok=True)
    path = job.save()
    log.info("%s: training launched (%s, %s x %s devices)", stage_name, launcher, trainer.num_nodes, trainer.devices)
    if launcher == "slurm":
        detail = run_slurm(path, job, stage_name)
    else:
        code = run_local(path, job)
        detail = None if code == 0 else f"the job exited with code {code}"
    result = job.folder / RESULT_FILE
    if detail is not None or not result.exists():
        raise _job_error(job, stage_name, detail or "the job ended without a result")
    return TrainResult(**json.loads(result.read_text()))


# ------------------------------------------------------------------------------------------ job side


def _global_rank() -> int:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0))


def run_job(job_path: str) -> None:
    """Train one job on this rank (every rank of the job runs this); rank 0 writes ``result.json``."""
    from bft.artifacts.store import write_json_atomic
    from bft.data.io import read_jsonl
    from bft.models.chat_templates import register_chat_template
    from bft.sft.train import train_sft

    job = TrainJob.load(job_path)
    if job.chat_template is not None:  # a fresh process has no registered template settings
        register_chat_template(job.base_model, *job.chat_template)
    result = train_sft(
        read_jsonl(job.examples),
        job.base_model,
        Path(job.out_dir),
        SFTStageConfig(**job.stage),
        PeftConfig(**job.peft),
        TrainerConfig(**job.trainer),
        seed=job.seed,
        model_dtype=job.model_dtype,
    )
    if _global_rank() == 0:
        write_json_atomic(job.folder / RESULT_FILE, asdict(result))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bft.sft.launch JOB_JSON", file=sys.stderr)
        return 2
    job_path = Path(args[0])
    verbose = os.environ.get("BFT_VERBOSE") == "1" or TrainJob.load(job_path).verbose
    from bft.logger.console import setup_console

    level = logging.INFO if _global_rank() == 0 else logging.WARNING  # the other ranks would repeat rank 0's lines
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    setup_console(verbose)
    try:
        run_job(str(job_path))
    except BaseException as err:  # every failure: its line for the pipeline, its traceback for the log
        line = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}".rstrip(": ")
        text = f"rank {_global_rank()}: {line}\n{traceback.format_exc()}"
        (job_path.parent / f"error-{os.getpid()}.txt").write_text(text)
        print(f"bft.sft.launch: rank {_global_rank()}: {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
