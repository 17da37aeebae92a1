"""Generation across workers: a stage's shards computed in-process or by many processes (submitit, Slurm, Ray)."""

from bft.workers.job import ShardJob, process_shards, run_worker
from bft.workers.run import ShardRun, run_stage, stage_job

__all__ = ["ShardJob", "ShardRun", "process_shards", "run_stage", "run_worker", "stage_job"]
