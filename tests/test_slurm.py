"""bft on a real one-node Slurm cluster (Debian's slurmctld + slurmd, started by ``.ci/slurm-cluster start``).

Generation workers as a Slurm array give the in-process shards byte for byte; a refused request is one line; a job
that cannot start is cancelled after ``workers.pending_timeout_min`` with one line and nothing left queued; a
two-job ``hydra/launcher=submitit_slurm`` sweep, whose jobs start their own worker arrays, prints each job's
summary where it was started and names its W&B runs by their overrides. Without a cluster these tests skip, unless
``BFT_REQUIRE_SLURM=1`` (CI), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bft.pipeline.context import PipelineError
from bft.workers import run_stage

pytestmark = pytest.mark.slow  # starts processes on the cluster

REPO = Path(__file__).resolve().parents[1]


def _partition() -> str | None:
    """The cluster's default partition when a node of it is up, else None."""
    if shutil.which("sinfo") is None:
        return None
    out = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=30).stdout.split("\n")
    for line in out:
        name, _, state = line.partition(" ")
        if name.endswith("*") and state.strip() in ("idle", "mix", "alloc"):
            return name.rstrip("*")
    return None


@pytest.fixture(scope="module")
def partition() -> str:
    name = _partition()
    if name is None:
        message = "no Slurm cluster is up: run `.ci/slurm-cluster start` (root)"
        if os.environ.get("BFT_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return name


def _queued() -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=30).stdout.split()


def _slurm_workers(partition: str, **extra) -> OmegaConf:
    settings = {"engine": "submitit", "cluster": "slurm", "count": 2, "partition": partition, "mem_gb": 3, "poll_seconds": 0.5}
    settings |= {"cpus_per_task": 1, "timeout_min": 10, "pending_timeout_min": 5.0, "threads_per_worker": 1}
    return OmegaConf.create({**settings, "gpus_per_task": None, "submitit": {}, "ray": {}, **extra})


def test_slurm_array_workers_give_the_in_process_shards(partition, tmp_path, compose_cfg):
    from test_workers import _corpus, _job, _shard_bytes

    cfg = compose_cfg("debug=smoke", "generation.shard_size=2")
    _corpus(tmp_path / "corpus.jsonl")
    reference = _job(cfg, tmp_path, "one")
    run_stage(reference, cfg.workers)
    job = _job(cfg, tmp_path, "slurm")
    run = run_stage(job, _slurm_workers(partition))
    assert run.metrics["workers"] == 2 and run.metrics["engine"] == "submitit"
    assert _shard_bytes(Path(job.work)) == _shard_bytes(Path(reference.work))
    assert len(list((Path(job.work) / "logs" / "workers").rglob("*.out"))) == 2  # the tasks' logs stay with the artifact


def test_a_request_slurm_refuses_is_one_line(partition, tmp_path, compose_cfg):
    from test_workers import _corpus, _job

    cfg = compose_cfg("debug=smoke", "generation.shard_size=2")
    _corpus(tmp_path / "corpus.jsonl")
    with pytest.raises(PipelineError, match=r"^workers=slurm: Slurm refused the job: sbatch: error: .*gres") as caught:
        run_stage(_job(cfg, tmp_path, "gpu"), _slurm_workers(partition, gpus_per_task=1))
    assert "\n" not in str(caught.value)


def test_a_job_that_cannot_start_is_cancelled_in_one_line(partition, tmp_path, compose_cfg):
    from test_workers import _corpus, _job

    cfg = compose_cfg("debug=smoke", "generation.shard_size=2")
    _corpus(tmp_path / "corpus.jsonl")
    later = {"slurm_additional_parameters": {"begin": "now+1hour"}}  # pending (BeginTime) for an hour
    workers = _slurm_workers(partition, pending_timeout_min=0.03, submitit=later)  # 1.8 s
    with pytest.raises(PipelineError, match=r"did not start within \d+ s .*pending \(BeginTime\); it is cancelled"):
        run_stage(_job(cfg, tmp_path, "later"), workers)
    assert not [name for name in _queued() if name == "bft-augment"]


def test_ctrl_c_while_waiting_cancels_the_submitted_jobs(partition, tmp_path):
    from bft.workers.engines import run_submitit

    job_file = tmp_path / "job.json"
    job_file.write_text("{}")  # never read: the job is pending (BeginTime) when Ctrl-C comes

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    params = {"name": "bft-ctrl-c", "timeout_min": 5, "cpus_per_task": 1, "mem_gb": 1, "slurm_partition": partition}
    params["slurm_additional_parameters"] = {"begin": "now+1hour"}
    with pytest.raises(KeyboardInterrupt):
        run_submitit(job_file, 2, "slurm", params, ctrl_c, 0.1)
    assert "bft-ctrl-c" not in _queued()


def test_a_request_past_the_partition_never_waits(partition, tmp_path, compose_cfg):
    from test_workers import _corpus, _job

    cfg = compose_cfg("debug=smoke", "generation.shard_size=2")
    _corpus(tmp_path / "corpus.jsonl")
    cpus = os.cpu_count() or 1
    with pytest.raises(PipelineError, match=r"can never start on this cluster: pending \(PartitionConfig\); it is cancelled"):
        run_stage(_job(cfg, tmp_path, "big"), _slurm_workers(partition, cpus_per_task=cpus + 2))
    assert not [name for name in _queued() if name == "bft-augment"]


def test_submitit_sweep_with_slurm_workers_reports_each_job_where_it_started(partition, tmp_path):
    """``bft -m hydra/launcher=submitit_slurm ...`` with ``workers=slurm workers.partition=<name>``: each sweep job is
    a Slurm job that starts its own worker arrays."""
    store, sweep = tmp_path / "artifacts", tmp_path / "sweep"
    argv = [
        "-m",
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.partition={partition}",
        "hydra.launcher.mem_gb=4",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=20",
        f"hydra.sweep.dir={sweep}",
        "debug=smoke",
        "logger=wandb_offline",
        "workers=slurm",
        f"workers.partition={partition}",
        "workers.count=1",  # one task per array: 2 tasks per array are the tests above (each task loads torch: seconds)
        "workers.mem_gb=3",
        "workers.cpus_per_task=1",
        "workers.poll_seconds=0.5",
        "corpus.max_documents=6",  # each job: the smoke pipeline on half its documents
        # the jobs differ from the final model on: they share (or wait for) the corpus, the models and the augment
        # and curation arrays in the store, then each trains and answers the eval set as its own array; no rewriting
        # or base-model answers, whose arrays are those of the tests above (each task starts a process, loads torch)
        "rewriter=none",
        "eval.reference=dataset",
        "sft.final.max_steps=1,2",
        f"run.artifacts_dir={store}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "bft.cli", *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert f"sweep {sweep}: 2 job(s) with a summary" in lines, result.stdout[-2000:]
    jobs = [line for line in lines if line.startswith(("0_", "1_")) and "win rate" in line]
    assert len(jobs) == 2 and "max_steps=1" in jobs[0] and "max_steps=2" in jobs[1], jobs
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    fixed = "debug=smoke,corpus.max_documents=6,rewriter=none,eval.reference=dataset"
    names = [f"backandforth[{fixed},sft.final.max_steps={steps}]" for steps in (1, 2)]
    assert [s["wandb"]["name"] for s in summaries] == names
    assert len({s["wandb"]["group"] for s in summaries}) == 1
    assert list(store.glob("augment/*/logs/workers/*/*.out"))  # generation ran as Slurm arrays, logs kept
    assert len(list(store.glob("eval_outputs/*/logs/workers/*/*.out"))) == 2  # one array per job
    assert not [name for name in _queued() if name.startswith("bft")]


def test_a_sweep_job_refused_by_its_config_ends_the_sweep_with_its_line(partition, tmp_path):
    """A sweep job exits on a config error before any work: submitit must learn that it ended (this cluster keeps
    no accounting, so only the job's recorded result can say so) and the launching command must end with the
    job's line, instead of waiting for it."""
    argv = ["-m", "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={partition}", "hydra.launcher.mem_gb=2"]
    argv += ["hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=5", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    argv += ["debug=smoke", "curation=none", "rewriter=none", f"run.artifacts_dir={tmp_path / 'artifacts'}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "bft.cli", *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode != 0
    assert "rewriter=none with curation disabled" in result.stdout + result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "artifacts").exists()  # refused before any work
    assert not [name for name in _queued() if name.startswith("bft")]
