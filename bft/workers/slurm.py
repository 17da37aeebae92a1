"""What a Slurm array job of generation workers asks for, and what Slurm says while it waits.

* :func:`slurm_parameters`: submitit's parameters from the typed ``workers.*`` keys. Defaults fit any cluster: no
  GPU unless the stage's engine needs one (vLLM: tensor x data parallel; hf: 1 when ``generation.device`` is cuda),
  CPUs from ``workers.threads_per_worker`` (else 2, or 8 per GPU) and memory from the model's size. Anything else
  submitit takes (``slurm_account``, ``slurm_qos``, ``slurm_additional_parameters``) goes in ``workers.submitit``.
* :func:`queue_state`: the array job's state and pending reason from ``squeue`` (works without accounting).
* :func:`submission_error`: sbatch's own error line out of submitit's wrapped traceback.
"""

from __future__ import annotations

import math
import subprocess
from typing import Any

GIB = 1024**3
# pending reasons Slurm gives a job that can never start as configured (it waits for an admin, not for resources)
NEVER_STARTS = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "InvalidAccount", "InvalidQOS")


def stage_gpus(generation: dict[str, Any]) -> int:
    """GPUs one worker of a stage needs: its engine's replicas x tensor-parallel ranks, or one for hf on cuda."""
    if generation.get("backend") == "vllm":
        return int(generation.get("tensor_parallel_size") or 1) * int(generation.get("data_parallel_size") or 1)
    return 1 if str(generation.get("device") or "cpu").startswith("cuda") else 0


def stage_mem_gb(params: int | None, gpus: int) -> int:
    """Host memory for a worker: the weights twice in float32 (load + convert) plus 4 GB, at least 8 GB.

    A GPU worker holds the weights on its devices; its host needs one bf16 copy while loading."""
    if params is None:
        return 16 if gpus == 0 else 32 * gpus
    weights = params * (2 if gpus else 8) / GIB
    return max(8, math.ceil(weights + 4))


def slurm_parameters(workers: dict[str, Any], generation: dict[str, Any], params: int | None, name: str) -> dict[str, Any]:
    """submitit parameters of a Slurm array task for a stage (``workers.*`` wins over what the stage implies)."""
    gpus = workers.get("gpus_per_task")
    gpus = stage_gpus(generation) if gpus is None else int(gpus)
    cpus = workers.get("cpus_per_task") or workers.get("threads_per_worker") or (8 * gpus if gpus else 2)
    result: dict[str, Any] = {
        "name": name,
        "timeout_min": int(workers.get("timeout_min") or 1440),
        "cpus_per_task": int(cpus),
        "mem_gb": int(workers.get("mem_gb") or stage_mem_gb(params, gpus)),
    }
    if gpus:
        result["gpus_per_node"] = gpus
    if workers.get("partition"):
        result["slurm_partition"] = workers["partition"]
    return {**result, **(workers.get("submitit") or {})}


def queue_state(job_id: str) -> tuple[str, str] | None:
    """``(state, reason)`` of an array job: RUNNING once any task runs, else the first task's; None once gone."""
    array = job_id.split("_")[0]
    try:
        out = subprocess.run(["squeue", "-h", "-j", array, "-o", "%T|%r"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = [line.split("|", 1) for line in out.stdout.splitlines() if "|" in line]
    if not rows:
        return None
    running = [r for r in rows if r[0] != "PENDING"]
    state, reason = (running or rows)[0]
    return state, reason


def submission_error(err: BaseException) -> str:
    """The ``sbatch: error: ...`` line that explains a refused submission (the last one names the cause)."""
    lines = [line.strip() for line in str(err).splitlines() if "error" in line.lower() and line.strip()]
    sbatch = [line for line in lines if line.startswith("sbatch:")]
    details = [line for line in sbatch if "Batch job submission failed" not in line]
    return (details or sbatch or lines or [type(err).__name__])[0][:300]
