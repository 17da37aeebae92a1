"""Which launcher runs a training stage (``trainer.launcher``), checked before any work; see :mod:`bft.sft.launch`.

Plain functions of the trainer settings, importing neither torch nor the workers (``bft.config.validate`` calls
:func:`check_launcher`).
"""

from __future__ import annotations

from typing import Any

from bft.config.schema import TrainerConfig
from bft.errors import ConfigError

LAUNCHERS = ("auto", "inprocess", "local", "slurm")
GPU_ACCELERATORS = ("gpu", "cuda", "auto")


def single_cpu_process(trainer: TrainerConfig) -> bool:
    """True when the Trainer runs one process on the CPU (the only case ``inprocess`` may train)."""
    return str(trainer.accelerator) == "cpu" and trainer.devices in (1, "1") and int(trainer.num_nodes) == 1


def resolve_launcher(trainer: TrainerConfig) -> str:
    """``inprocess``, ``local`` or ``slurm`` for this Trainer (see the module docstring)."""
    if trainer.launcher == "auto":
        return "inprocess" if single_cpu_process(trainer) else "local"
    return trainer.launcher


def check_launcher(trainer: Any) -> None:
    """One-line ConfigError for a launcher that cannot run this Trainer (before any work)."""
    launcher = str(trainer.launcher)
    if launcher not in LAUNCHERS:
        raise ConfigError(f"trainer.launcher={launcher!r} is not one of {', '.join(LAUNCHERS)}")
    if launcher == "inprocess" and not single_cpu_process(trainer):
        raise ConfigError(
            f"trainer.launcher=inprocess trains in the pipeline process, so only on one CPU device "
            f"(trainer.accelerator={trainer.accelerator} devices={trainer.devices} num_nodes={trainer.num_nodes}); "
            "use trainer.launcher=auto"
        )
    if int(trainer.num_nodes) > 1 and launcher != "slurm":
        raise ConfigError(f"trainer.num_nodes={trainer.num_nodes} needs trainer.launcher=slurm (one task per device on each node)")
    if launcher == "slurm" and not (isinstance(trainer.devices, int) and trainer.devices > 0):
        raise ConfigError(f"trainer.launcher=slurm needs trainer.devices as a number of devices per node, got {trainer.devices!r}")


def slurm_parameters(trainer: TrainerConfig, stage_name: str) -> dict[str, Any]:
    """submitit executor parameters: ``num_nodes`` nodes, one task per device (and one GPU per task on GPUs);
    ``trainer.slurm`` adds or overrides (partition, time limit, account, ...)."""
    params: dict[str, Any] = {"name": f"bft-{stage_name}", "nodes": int(trainer.num_nodes), "tasks_per_node": int(trainer.devices)}
    if str(trainer.accelerator) in GPU_ACCELERATORS:
        params["gpus_per_node"] = int(trainer.devices)
    return {**params, **dict(trainer.slurm or {})}
