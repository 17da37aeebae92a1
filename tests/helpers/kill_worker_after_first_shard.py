"""TEST-ONLY: run a bft generation worker that SIGKILLs itself when it starts its second shard.

Usage: python tests/helpers/kill_worker_after_first_shard.py JOB_JSON. Nothing in bft can select this file.
"""

from __future__ import annotations

import os
import signal
import sys

import bft.workers.job as job_module
from bft.workers.job import run_worker

real_task_process = job_module.task_process


def task_process_then_die(job, backend, tokenizer):
    process = real_task_process(job, backend, tokenizer)
    calls = []

    def wrapped(shard, index):
        calls.append(index)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-stage, holding the claim of this shard
        return process(shard, index)

    return wrapped


job_module.task_process = task_process_then_die
run_worker(sys.argv[1])
