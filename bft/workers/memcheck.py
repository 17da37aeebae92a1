"""Peak RSS of the augment stage as the corpus grows: ``python -m bft.workers.memcheck CORPUS --times 1 20``.

The raw corpus (JSONL with ``id`` and ``text``) first goes through the corpus stage once (the ``file`` defaults:
600-3,000-character segments, English, MinHash dedup), so augment sees the segments a run gives it, not raw pages
(web_en_dev has 109k-character ones, far past any model's context); ``--raw`` skips that. For each factor the
segments are replicated that many times with new ids and the real augment stage
(``bft.pipeline.stages.generation.compute_augment``) runs on them in a fresh process with the config's model (the
embedded default; ``--override model.name=tiny`` for the tiny test model) and a short ``max_new_tokens``, so what
grows with the factor is the stage's own memory, not the model's.
Prints one line per factor: records, seconds and peak RSS; the stage streams, so the figures should stay flat.
The corpus stage's own memory at N x is measured by ``python -m bft.bench.corpus`` (replicas there reach dedup).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bft.bench.corpus import replicate
from bft.pipeline.memory import peak_rss_mb


def run_augment(corpus: Path, folder: Path, overrides: list[str]) -> dict[str, float]:
    """The augment stage on ``corpus`` in this process; the backward model is the config's base model."""
    from hydra import compose, initialize_config_dir

    from bft.artifacts.store import Artifact
    from bft.config.schema import register_configs
    from bft.models.registry import resolve_model_path
    from bft.pipeline.stages.generation import compute_augment

    register_configs()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["debug=smoke", "logger=disabled", *overrides])
    model = folder / "backward_model"
    model.mkdir()
    (model / "model").symlink_to(resolve_model_path(cfg.model.name))
    corpus_art = Artifact("corpus", "memcheck", corpus.parent, {})
    backward = Artifact("backward_model", "memcheck", model, {"is_adapter": False})
    work = folder / "augment.partial"
    work.mkdir()
    started = time.time()
    output = compute_augment(cfg, {"corpus": corpus_art, "backward_model": backward}, work)
    return {"records": output.counts["in"], "seconds": round(time.time() - started, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--times", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--override", action="append", default=[], help="extra Hydra overrides")
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--raw", action="store_true", help="augment the corpus as it is, without the corpus stage")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: run one factor here
    args = parser.parse_args(argv)
    overrides = [f"generation.augment.max_new_tokens={args.max_new_tokens}", "generation.shard_size=64", *args.override]
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "corpus").mkdir()
            corpus = folder / "corpus" / "corpus.jsonl"
            replicate(args.corpus, args.times[0], corpus)
            print(json.dumps(run_augment(corpus, folder, overrides)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        try:
            source = args.corpus if args.raw else clean(args.corpus, Path(tmp) / "clean" / "corpus.jsonl")
        except Exception as exc:  # noqa: BLE001 - one line, not a traceback
            print(f"corpus stage: failed: {exc}", file=sys.stderr)
            return 1
        return _measure(source, args)


def clean(raw: Path, out: Path) -> Path:
    """The corpus stage's segments of ``raw`` (the ``file`` corpus defaults) in ``out``."""
    from bft.config.schema import CorpusConfig
    from bft.data.corpus import build_corpus

    counts = build_corpus(CorpusConfig(source=str(raw), min_chars=600, max_chars=3000), "skip", out)
    print(f"corpus stage: {counts['in']} documents -> {counts['out']} segments", flush=True)
    return out


def _measure(corpus: Path, args: argparse.Namespace) -> int:
    peaks: list[float] = []
    for times in args.times:
        cmd = [
            sys.executable,
            "-m",
            "bft.workers.memcheck",
            str(corpus),
            "--raw",
            "--times",
            str(times),
            "--one",
            f"--max-new-tokens={args.max_new_tokens}",
            *[f"--override={o}" for o in args.override],
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:  # the factor's own error, not a bare CalledProcessError
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            print(f"{times}x: failed: {lines[-1]}", file=sys.stderr)
            return 1
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{times}x: {result['records']} records, {result['seconds']} s, peak RSS {result['peak_rss_mb']} MB", flush=True)
        peaks.append(result["peak_rss_mb"])
    if len(peaks) > 1:
        print(f"peak RSS ratio {args.times[-1]}x / {args.times[0]}x: {peaks[-1] / peaks[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
