"""TEST-ONLY: run a bft generation worker that SIGKILLs itself when it starts its second shard.

Usage: python tests/helpers/kill_worker_after_first_shard.py JOB_JSON. Nothing in bft can select this file.
"""

from __future__ import annotations

import os
import signal
import sys

import bft.workers.processors as processors
from bft.workers.job import run_worker

real_augment = processors.PROCESSORS["augment"]


def augment_then_die(params, backend, tokenizer):
    process = real_augment(params, backend, tokenizer)
    calls = []

    def wrapped(shard, index):
        calls.append(index)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-stage, holding the claim of this shard
        return process(shard, index)

    return wrapped


processors.PROCESSORS["augment"] = augment_then_die
run_worker(sys.argv[1])
