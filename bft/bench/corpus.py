"""Peak memory of the corpus stage as the corpus grows: ``python -m bft.bench.corpus --corpus web.jsonl``.

For each scale N the corpus is replicated N times with new ids into one JSONL file under ``--workdir``, and the
stage (:func:`bft.data.corpus.build_corpus`, the default chain with MinHash dedup) runs in a fresh process, so
its peak RSS (the process and its children) is measured alone. Prints one line per scale and, with ``--out``,
the JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from bft.config.schema import CorpusConfig
from bft.data.corpus import build_corpus
source, out, workers = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
start = time.perf_counter()
counts = build_corpus(CorpusConfig(source=source, min_chars=600, max_chars=3000, workers=workers), "skip", out)
seconds = time.perf_counter() - start
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": seconds, "self_mb": self_kb / 1024, "children_mb": child_kb / 1024, "counts": counts}))
"""


def replicate(corpus: Path, scale: int, dest: Path) -> int:
    """Write ``scale`` copies of every record of ``corpus`` (ids suffixed ``-rK``) to ``dest``; returns the rows."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with dest.open("w", encoding="utf-8") as out:
        for k in range(scale):
            with corpus.open(encoding="utf-8") as handle:
                for line in handle:
                    record = json.loads(line)
                    record["id"] = f"{record.get('id', rows)}-r{k}"
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    rows += 1
    return rows


def measure(corpus: Path, scale: int, workdir: Path, workers: int) -> dict:
    source = workdir / f"input-{scale}x" / "docs.jsonl"
    rows = replicate(corpus, scale, source)
    out = workdir / f"out-{scale}x" / "corpus.jsonl"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(source), str(out), str(workers)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"corpus stage failed at {scale}x: {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(
        scale=scale,
        input_rows=rows,
        input_mb=source.stat().st_size / 2**20,
        wall_s=time.perf_counter() - start,
        peak_rss_mb=max(result["self_mb"], result["children_mb"]),
    )
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bft.bench.corpus", description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, required=True, help="a JSONL corpus with id and text")
    p.add_argument("--scales", type=int, nargs="+", default=[1, 20])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/bft-corpus-bench"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    results = []
    for scale in args.scales:
        r = measure(args.corpus, scale, args.workdir, args.workers)
        results.append(r)
        print(
            f"{scale:>3}x: {r['input_rows']} docs ({r['input_mb']:.1f} MB) -> {r['counts']['out']} kept, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB (process {r['self_mb']:.0f}, largest child {r['children_mb']:.0f}), "
            f"{r['seconds']:.1f} s in the stage"
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(f"peak RSS ratio {last['scale']}x / {first['scale']}x: {last['peak_rss_mb'] / first['peak_rss_mb']:.2f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
