"""``bft`` started as one of several ranks (``srun --ntasks=8 bft ...``, ``torchrun --nproc-per-node=8 -m bft.cli``).

The pipeline runs once, on rank 0: it computes the data stages once and launches each multi-device training as its
own job (``trainer.launcher``, bft.sft.launch). Every other rank prints one line and exits with status 0 rather
than an error: a non-zero exit would mark the Slurm step failed and, under ``srun --kill-on-bad-exit`` or torchrun,
kill rank 0 while it works. The generation stages run in rank 0's process only, so start ``bft`` as one task (one
``sbatch`` task holding the node's GPUs) to give them the whole node.
"""

from __future__ import annotations

from collections.abc import Mapping

# (rank variable, world-size variable, who set them), in the order checked
_LAUNCHERS = (
    ("RANK", "WORLD_SIZE", "torchrun"),
    ("SLURM_PROCID", "SLURM_NTASKS", "srun"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "mpirun"),
    ("PMI_RANK", "PMI_SIZE", "mpirun"),
)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def launch_rank(environ: Mapping[str, str]) -> tuple[int, int, str] | None:
    """(rank, world size, launcher) when this process is one of several ranks, else None."""
    for rank_var, world_var, launcher in _LAUNCHERS:
        rank, world = _int(environ.get(rank_var)), _int(environ.get(world_var))
        if rank is not None and world is not None and world > 1:
            return rank, world, launcher
    return None


def secondary_rank_notice(environ: Mapping[str, str]) -> str | None:
    """The line a rank other than 0 prints before exiting; None on rank 0 and in a single process."""
    found = launch_rank(environ)
    if found is None or found[0] == 0:
        return None
    rank, world, launcher = found
    return (
        f"rank {rank} of {world} ({launcher}): the pipeline runs on rank 0 only, which launches each multi-device "
        "training as its own job (trainer.launcher); this rank exits"
    )


def detach_from_launcher(environ) -> tuple[int, int, str] | None:
    """On rank 0 of a multi-rank start, drop the rank variables from ``environ`` (``os.environ``): the pipeline is
    one process, and nothing it runs (an in-process training, a generation worker) may take itself for one rank of
    the launcher's job. Returns what was found (None in a single process, where nothing changes)."""
    from bft.sft.launch import job_environment

    found = launch_rank(environ)
    if found is not None:
        kept = job_environment(dict(environ))
        for name in [n for n in environ if n not in kept]:
            del environ[name]
    return found
