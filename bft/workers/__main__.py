"""Run one generation worker by hand: ``python -m bft.workers <work>/workers/job.json [rank] [count]``.

Extra workers can join a running stage this way (on any machine that sees the artifact folder); they claim shards
nobody holds and stop when none is left. The stage is published by the pipeline process that drives it.
"""

from __future__ import annotations

import sys

from bft.workers.job import run_worker


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or len(args) > 3:
        print("usage: python -m bft.workers JOB_JSON [RANK] [COUNT]", file=sys.stderr)
        return 2
    run_worker(args[0], *(int(a) for a in args[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
