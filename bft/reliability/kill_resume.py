"""Chaos check: SIGKILL a pipeline run at random moments, restart it each time, and compare the curated dataset
(and the other generated artifacts) with an uninterrupted run of the same config.

    python -m bft.reliability.kill_resume --kills 3 --store /tmp/chaos -- [bft overrides...]

It runs ``bft`` (the real CLI) in subprocesses: one uninterrupted run into ``<store>/clean``, then a run into
``<store>/killed`` that is killed ``--kills`` times at random points and restarted until it finishes.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

COMPARED = (
    "curate/*/curated.jsonl",
    "curate/*/scored.jsonl",
    "augment/*/candidates.jsonl",
    "rewrite/*/generated.jsonl",
    "train_data/*/train.jsonl",
)


def bft_command(store: Path, run_dir: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "bft.cli", *overrides, f"run.artifacts_dir={store}", f"hydra.run.dir={run_dir}", "logger=disabled"]


def digests(store: Path) -> dict[str, str]:
    found = {}
    for pattern in COMPARED:
        for path in sorted(store.glob(pattern)):
            if ".partial" not in str(path):
                found[str(path.relative_to(store))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_with_kills(store: Path, overrides: list[str], kills: int, window: tuple[float, float], seed: int) -> list[float]:
    rng = random.Random(seed)
    killed_at = []
    for attempt in range(kills + 1):
        proc = subprocess.Popen(
            bft_command(store, store / f"run{attempt}", overrides), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if attempt < kills:
            delay = rng.uniform(*window)
            try:
                proc.wait(delay)
                print(f"attempt {attempt}: finished before the kill at {delay:.0f}s", flush=True)
                return killed_at
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_at.append(round(delay, 1))
                print(f"attempt {attempt}: SIGKILL after {delay:.0f}s", flush=True)
        else:
            code = proc.wait()
            if code != 0:
                raise SystemExit(f"the final restart failed with exit code {code}")
    return killed_at


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="folder for the clean and the killed stores")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=20.0, help="earliest kill, seconds after a (re)start")
    parser.add_argument("--max-seconds", type=float, default=150.0, help="latest kill, seconds after a (re)start")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="bft overrides, after --")
    args = parser.parse_args(argv)
    clean, killed = args.store / "clean", args.store / "killed"
    started = time.time()
    if not digests(clean):
        subprocess.run(
            bft_command(clean, clean / "run", args.overrides), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    print(f"uninterrupted run: {time.time() - started:.0f}s", flush=True)
    kills = run_with_kills(killed, args.overrides, args.kills, (args.min_seconds, args.max_seconds), args.seed)
    a, b = digests(clean), digests(killed)
    for name in sorted(set(a) | set(b)):
        print(f"{'same' if a.get(name) == b.get(name) else 'DIFFERENT'}  {name}  {b.get(name, 'missing')[:16]}")
    same = bool(a) and a == b
    print(f"kills at {kills} s after each start; artifacts identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
