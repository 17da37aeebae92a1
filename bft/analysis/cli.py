"""``bft-analyze``: diversity, lengths, MAUVE and eval overlap of several datasets, with plots.

Example::

    bft-analyze human=data/seed_human.jsonl outputs/artifacts/rewrite/abc123 web=corpus.jsonl --out analysis
    bft-analyze corpus outputs/artifacts/corpus/abc123   # what each corpus filter removed, with examples
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bft.analysis.inputs import DATASET_FILES, InputError, load_dataset, unique_names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bft-analyze",
        description="Compare instruction datasets: unique trigrams, lengths, MAUVE, eval-set overlap; writes md/csv/json + PNGs. "
        "'bft-analyze corpus PATH' instead shows what each corpus filter removed (see 'bft-analyze corpus -h').",
    )
    parser.add_argument(
        "datasets",
        nargs="+",
        metavar="[NAME=]PATH",
        help=f"JSONL/JSON/Parquet file (instruction+output, or text for raw web docs) or an artifact/run folder "
        f"(first of {', '.join(DATASET_FILES)})",
    )
    parser.add_argument("--eval-set", default="embedded", help="alpaca_eval-format JSON/JSONL, 'embedded' (default), or 'none'")
    parser.add_argument("--out", default="analysis", help="output folder (default ./analysis)")
    parser.add_argument("--mauve-reference", default=None, metavar="NAME", help="dataset used as P for MAUVE (default: the first)")
    parser.add_argument("--max-records", type=int, default=2000, help="deterministic subsample per dataset (default 2000; 0 = all)")
    parser.add_argument("--no-mauve", action="store_true", help="skip MAUVE")
    parser.add_argument("--features", choices=("minilm", "gpt2"), default="minilm", help="features for MAUVE and the map")
    parser.add_argument("--projection", choices=("pca", "tsne"), default="pca", help="2-D projection of the embedding map")
    parser.add_argument("--tokenizer", default="smollm2_135m", help="registry model whose tokenizer counts tokens")
    parser.add_argument("--seed", type=int, default=0, help="subsampling seed")
    return parser


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["corpus"]:
        from bft.analysis.corpus_filters import main as corpus_main

        return corpus_main(argv[1:])
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    start = time.perf_counter()
    max_records = None if args.max_records <= 0 else args.max_records
    try:
        datasets = unique_names([load_dataset(spec, max_records, args.seed) for spec in args.datasets])
    except InputError as err:
        _err(f"bft-analyze: {err}")
        return 2
    eval_instructions = None
    if args.eval_set and args.eval_set.lower() != "none":
        from bft.eval.sets import EvalSetError, load_eval_set

        try:
            eval_instructions = [r["instruction"] for r in load_eval_set(args.eval_set)]
        except EvalSetError as err:
            _err(f"bft-analyze: {err}")
            return 2

    from bft.analysis.analyze import analyze
    from bft.analysis.embeddings import CachedEmbedder, choose_embedder, minilm_features
    from bft.analysis.lengths import load_length_tokenizer
    from bft.analysis.plots import plot_embedding_map, plot_length_histograms, plot_trigrams
    from bft.analysis.report import print_table, write_outputs

    features, embedder = choose_embedder(args.features, warn=_err)
    minilm = CachedEmbedder(minilm_features)  # one cache: responses embedded for the map are reused by the overlap check
    embedder = minilm if features == "minilm" else CachedEmbedder(embedder)
    try:
        result = analyze(
            datasets,
            tokenizer=load_length_tokenizer(args.tokenizer),
            embedder=embedder,
            features=features,
            reference=args.mauve_reference,
            eval_instructions=eval_instructions,
            do_mauve=not args.no_mauve,
            overlap_embedder=minilm,
            log=_err,
        )
    except ValueError as err:
        _err(f"bft-analyze: {err}")
        return 2

    out = Path(args.out)
    t = time.perf_counter()
    images = {
        "Embedding map": plot_embedding_map(result.embeddings, out / "embedding_map.png", args.projection, features).name,
        "Token lengths": plot_length_histograms(result.token_lengths, out / "lengths.png").name,
        "Unique trigrams": plot_trigrams(result.rows, out / "trigrams.png").name,
    }
    result.meta["timings"]["plots_s"] = round(time.perf_counter() - t, 2)
    result.meta.update(
        {
            "eval_set": None if eval_instructions is None else args.eval_set,
            "max_records": max_records,
            "projection": args.projection,
            "tokenizer": args.tokenizer,
            "runtime_s": round(time.perf_counter() - start, 2),
        }
    )
    paths = write_outputs(result.rows, result.meta, out, images)
    print_table(result.rows, result.meta)
    print(f"wrote {', '.join(str(p) for p in paths.values())} and {', '.join(str(out / n) for n in images.values())}")
    print(f"runtime {result.meta['runtime_s']:.1f}s ({', '.join(f'{k}={v}' for k, v in result.meta['timings'].items())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
