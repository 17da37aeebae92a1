"""``bft-eval``: score model outputs with alpaca_eval, re-score a run, or recompute metrics from judgements.

Usage (Hydra-style ``key=value`` arguments)::

    bft-eval outputs=model_outputs.json eval=ae1 annotator=alpaca_eval_gpt4   # judge outputs against an eval set
    bft-eval run=artifacts/my_run                                              # re-score a run folder into run/eval/
    bft-eval annotations=annotations.jsonl [outputs=model_outputs.jsonl]       # metrics from existing judgements
    bft-eval calibrate annotator=local gold=annotations.jsonl [max_pairs=200] [judge_orders=2]
                                               # agreement with gold judgements vs "longer wins" and chance (cached)

Options: annotator (local | openai_compatible | any alpaca_eval annotator name or configs.yaml path; default local),
judge_model (default smollm2_135m; the served model name with openai_compatible), judge_adapter, judge_dtype,
judge_batch_size, eval (ae1 | ae2 | embedded | path; default embedded), max_instances, seed, lc_weights_dir, name,
out (output folder), reference (with annotations=: reference outputs joined on instruction, for the length-controlled
win rate), judge_orders (1 | 2: judge each pair in both orders and combine them). calibrate also takes gold,
outputs_1, outputs_2 (output files joined on instruction when the gold file lacks output_1 / output_2; found next to
the gold file otherwise), max_pairs, cache_dir, refresh.
A served judge (annotator=openai_compatible) also takes judge_url (its OpenAI-compatible base URL, e.g.
http://127.0.0.1:8000/v1), judge_api_key_env (the name of the variable holding its key; none for a keyless server)
and judge_api_scheme (the alpaca_eval annotator whose prompt and parser it uses; default
weighted_alpaca_eval_gpt4_turbo).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bft.eval.annotators import AnnotatorError, check_annotator_ready
from bft.eval.endpoint import ENDPOINT, Endpoint, EndpointError, endpoint_from

KEYS = {
    "outputs": "model outputs (JSON/JSONL in alpaca_eval format)",
    "eval": "eval set: ae1 | ae2 | embedded | path (default embedded)",
    "annotator": "local | openai_compatible | alpaca_eval annotator name or config path (default local)",
    "run": "run folder holding model_outputs.json and reference_outputs.json",
    "annotations": "existing judgements (JSON/JSONL with instruction, preference)",
    "reference": "with annotations=: reference outputs joined on instruction (lengths for the LC win rate)",
    "out": "output folder (default: <run or outputs folder>/eval)",
    "judge_model": "local judge model (default smollm2_135m)",
    "judge_adapter": "PEFT adapter folder for the local judge",
    "judge_dtype": "local judge dtype (default auto)",
    "judge_batch_size": "local judge batch size (default 4)",
    "max_instances": "first N instructions of the eval set",
    "seed": "alpaca_eval annotator seed (default 0)",
    "lc_weights_dir": "folder holding alpaca_eval's df_gamed.csv for the length-controlled win rate",
    "name": "model name in the leaderboard",
    "judge_orders": "1 | 2: judge each pair in one order or in both and combine (default 1)",
    "judge_url": "openai_compatible: the served judge's base URL (e.g. http://127.0.0.1:8000/v1)",
    "judge_api_key_env": "openai_compatible: name of the environment variable holding the key (default: no key)",
    "judge_api_scheme": "openai_compatible: alpaca_eval annotator whose prompt/parser to use (default AE2 weighted)",
}
ENDPOINT_KEYS = ("judge_url", "judge_api_key_env", "judge_api_scheme")
CALIBRATE_KEYS = {
    "annotator": KEYS["annotator"],
    "gold": "gold judgements: an alpaca_eval annotation file (instruction, generator_1/2, preference)",
    "outputs_1": "output file of generator_1 (default: found next to the gold file)",
    "outputs_2": "output file of generator_2 (default: found next to the gold file)",
    "max_pairs": "a seeded sample of N gold pairs (default: all)",
    "seed": "sample and display-order seed (default 0)",
    "cache_dir": "calibration cache folder (default $BFT_CALIBRATION_DIR or ~/.cache/bft/calibration)",
    "refresh": "true: recompute even when cached",
    **{k: KEYS[k] for k in ("judge_model", "judge_adapter", "judge_dtype", "judge_batch_size", "judge_orders")},
    **{k: KEYS[k] for k in ENDPOINT_KEYS},
}


def endpoint_arg(args: dict[str, str], annotator: str) -> Endpoint | None:
    """The served judge of ``annotator=openai_compatible`` (None otherwise; its settings are refused then)."""
    if annotator != ENDPOINT:
        given = [k for k in ENDPOINT_KEYS if k in args]
        if given:
            raise UsageError(f"{', '.join(given)}: only with annotator={ENDPOINT}")
        return None
    return endpoint_from(args.get("judge_url"), args.get("judge_model"), args.get("judge_api_key_env"), args.get("judge_api_scheme"))


class UsageError(ValueError):
    pass


def parse_pairs(argv: Sequence[str], known: dict[str, str]) -> dict[str, str]:
    """``key=value`` tokens -> dict; unknown keys and malformed tokens are usage errors."""
    args: dict[str, str] = {}
    for token in argv:
        key, sep, value = token.lstrip("+").partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got '{token}'")
        if key not in known:
            raise UsageError(f"unknown key '{key}' (known: {', '.join(known)})")
        args[key] = value
    return args


def parse_args(argv: Sequence[str]) -> dict[str, str]:
    """``key=value`` tokens of the scoring modes -> dict; unknown keys and malformed tokens are usage errors."""
    args = parse_pairs(argv, KEYS)
    modes = [m for m in ("run", "annotations", "outputs") if m in args]
    if not modes:
        raise UsageError("give outputs=..., run=... or annotations=...")
    if "run" in args and "outputs" in args:
        raise UsageError("give either run=... or outputs=..., not both")
    return args


def _int(args: dict[str, str], key: str, default: int | None) -> int | None:
    if key not in args or args[key] in ("", "null", "None"):
        return default
    try:
        return int(args[key])
    except ValueError as e:
        raise UsageError(f"{key} must be an integer, got '{args[key]}'") from e


def _run_file(folder: Path, stem: str) -> Path:
    for suffix in (".json", ".jsonl"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise UsageError(f"run folder {folder} has no {stem}.json or {stem}.jsonl")


def is_writable(folder: Path) -> bool:
    """Writable by permission bits too (root ignores them, but a read-only data folder is meant to stay so)."""
    return folder.is_dir() and os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


# ---------------------------------------------------------------- printing


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(result: dict[str, Any], annotator: str | None) -> str:
    """Our leaderboard row, then the papers' comparable rows."""
    from bft.eval.paper_rows import AE2_ANNOTATORS, rows_for

    header = ("model", "win_rate", "SE", "discrete_WR", "LC_WR", "n", "avg_len")
    lc = result.get("length_controlled_winrate")
    rows = [
        (
            str(result.get("model", "this run")),
            _fmt(result.get("win_rate")),
            _fmt(result.get("standard_error")),
            _fmt(result.get("discrete_win_rate")),
            _fmt(lc) if lc is not None else "unavailable",
            _fmt(result.get("n_total")),
            _fmt(result.get("avg_length")),
        )
    ]
    ae2 = annotator in AE2_ANNOTATORS
    for paper in rows_for(annotator):
        wr = paper.ae2_win_rate if ae2 else paper.ae1_win_rate
        rows.append((paper.label, _fmt(wr), "", "", _fmt(paper.ae2_lc_win_rate) if ae2 else "", "", ""))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))]
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if k == 0:
            which = "AlpacaEval 2.0" if ae2 else "AlpacaEval 1.0"
            lines.append(f"-- papers ({which} figures as published; other judges are not comparable) --")
    notes = [f"annotator: {annotator}  judge: {result.get('judge_model')}  alpaca_eval {result.get('alpaca_eval_version')}"]
    if lc is None and result.get("lc_unavailable_reason"):
        notes.append(f"LC win rate unavailable: {result['lc_unavailable_reason']}")
    return "\n".join(lines + notes)


# ---------------------------------------------------------------- modes


def from_annotations(args: dict[str, str]) -> tuple[dict[str, Any], Path]:
    """Metrics from existing judgements, written next to them as ``<name>.leaderboard.json/.csv``."""
    import pandas as pd

    from bft.data.io import read_records
    from bft.eval.score import alpaca_eval_version, metrics_from_annotations, write_leaderboard

    path = Path(args["annotations"])
    df = pd.DataFrame(read_records(path).records)
    if "instruction" not in df.columns:
        raise UsageError(f"{path}: annotations need an 'instruction' field")
    if "output_2" not in df.columns and "outputs" in args:
        outputs = pd.DataFrame(read_records(Path(args["outputs"])).records)[["instruction", "output"]]
        outputs = outputs.drop_duplicates("instruction").rename(columns={"output": "output_2"})
        df = df.merge(outputs, on="instruction", how="left")
        n_missing = int(df["output_2"].isna().sum())
        if n_missing:
            print(f"warning: {n_missing} annotations have no model output to take a length from", file=sys.stderr)
        if n_missing == len(df):
            df = df.drop(columns="output_2")
    if "output_1" not in df.columns and "reference" in args:
        ref = pd.DataFrame(read_records(Path(args["reference"])).records)
        ref = ref.drop_duplicates("instruction").rename(columns={"output": "output_1", "generator": "generator_1"})
        keep = ["instruction"] + [c for c in ("output_1", "generator_1") if c in ref.columns and c not in df.columns]
        df = df.merge(ref[keep], on="instruction", how="left")
    metrics = metrics_from_annotations(df, lc_weights_dir=args.get("lc_weights_dir"))
    annotators = sorted(df["annotator"].dropna().astype(str).unique()) if "annotator" in df.columns else []
    model = args.get("name") or (
        ",".join(sorted(df["generator_2"].dropna().astype(str).unique())) if "generator_2" in df.columns else path.stem
    )
    result = {"model": model, **metrics}
    result.update(
        {
            "annotator": ",".join(annotators) or None,
            "judge_model": "as recorded in the annotations",
            "alpaca_eval_version": alpaca_eval_version(),
            "source_annotations": str(path.resolve()),
            "source_outputs": str(Path(args["outputs"]).resolve()) if "outputs" in args else None,
        }
    )
    out_dir = Path(args["out"]) if "out" in args else path.parent
    if "out" not in args and not is_writable(out_dir):
        print(f"note: {out_dir} is read-only; writing the metrics to the current folder", file=sys.stderr)
        out_dir = Path.cwd()
    stem = path.name.rsplit(".", 1)[0] + ".leaderboard"
    write_leaderboard(result, out_dir, stem=stem)
    return result, out_dir / stem


def from_outputs(args: dict[str, str], annotator: str, endpoint: Endpoint | None = None) -> tuple[dict[str, Any], Path]:
    """Judge outputs (``outputs=`` + ``eval=``, or a ``run=`` folder); returns the result and its file stem."""
    from bft.data.io import read_records
    from bft.eval.score import score_outputs
    from bft.eval.sets import load_eval_set, normalise_records

    if "run" in args:
        folder = Path(args["run"])
        model = read_records(_run_file(folder, "model_outputs")).records
        reference = normalise_records(read_records(_run_file(folder, "reference_outputs")).records, str(folder), "reference")
        out_dir = Path(args.get("out", folder / "eval"))
    else:
        outputs = Path(args["outputs"])
        model = read_records(outputs).records
        reference = load_eval_set(args.get("eval", "embedded"), _int(args, "max_instances", None))
        parent = outputs.parent if is_writable(outputs.parent) else Path.cwd()
        out_dir = Path(args.get("out", parent / "eval"))
    if "run" in args and "max_instances" in args:
        reference = reference[: _int(args, "max_instances", None)]
    wanted = {r["instruction"] for r in reference}
    model = [m for m in model if m.get("instruction") in wanted]
    if not model:
        raise UsageError("no model output matches an instruction of the eval set")
    result = score_outputs(
        model,
        reference,
        annotator,
        out_dir,
        judge_model=args.get("judge_model", "smollm2_135m"),
        judge_adapter=args.get("judge_adapter") or None,
        judge_dtype=args.get("judge_dtype", "auto"),
        judge_batch_size=_int(args, "judge_batch_size", 4) or 4,
        judge_orders=_int(args, "judge_orders", 1) or 1,
        seed=_int(args, "seed", 0) or 0,
        lc_weights_dir=args.get("lc_weights_dir") or None,
        name=args.get("name") or None,
        endpoint=endpoint,
    )
    return result, out_dir / "leaderboard"


def calibrate_main(argv: Sequence[str]) -> int:
    """``bft-eval calibrate ...``: print (and cache) the judge's calibration table."""
    from bft.eval.calibrate import CalibrationError, calibrate
    from bft.eval.calibration import format_calibration

    try:
        args = parse_pairs(argv, CALIBRATE_KEYS)
        if "gold" not in args:
            raise UsageError("calibrate needs gold=<alpaca_eval annotation file>")
        annotator = args.get("annotator", "local")
        endpoint = endpoint_arg(args, annotator)
        check_annotator_ready(annotator, endpoint)
        refresh = args.get("refresh", "false").lower()
        if refresh not in ("true", "false", "1", "0"):
            raise UsageError(f"refresh must be true or false, got '{args['refresh']}'")
        result = calibrate(
            Path(args["gold"]),
            annotator,
            outputs_1=Path(args["outputs_1"]) if args.get("outputs_1") else None,
            outputs_2=Path(args["outputs_2"]) if args.get("outputs_2") else None,
            max_pairs=_int(args, "max_pairs", None),
            seed=_int(args, "seed", 0) or 0,
            cache_dir=Path(args["cache_dir"]) if args.get("cache_dir") else None,
            refresh=refresh in ("true", "1"),
            judge_model=args.get("judge_model", "smollm2_135m"),
            judge_adapter=args.get("judge_adapter") or None,
            judge_orders=_int(args, "judge_orders", 1) or 1,
            judge_batch_size=_int(args, "judge_batch_size", 4) or 4,
            judge_dtype=args.get("judge_dtype", "auto"),
            endpoint=endpoint,
        )
    except (UsageError, AnnotatorError, EndpointError, CalibrationError) as e:
        print(f"bft-eval calibrate: error: {e}", file=sys.stderr)
        return 2
    print(format_calibration(result))
    print(f"cached: {result['cached']}" if result.get("cached") else f"wrote {result['written']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    if argv[0] == "calibrate":
        return calibrate_main(argv[1:])
    try:
        args = parse_args(argv)
        if "annotations" in args:
            result, written = from_annotations(args)
            annotator = result.get("annotator")
        else:
            annotator = args.get("annotator", "local")
            endpoint = endpoint_arg(args, annotator)
            check_annotator_ready(annotator, endpoint)  # before loading anything: fail in the first second
            result, written = from_outputs(args, annotator, endpoint)
    except (UsageError, AnnotatorError, EndpointError) as e:
        print(f"bft-eval: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"bft-eval: error: {e}", file=sys.stderr)
        return 1
    print(format_table(result, annotator))
    print(f"wrote {written}.json and {written}.csv")
    if result.get("reproduce_script"):
        print(f"reproduce with alpaca_eval's CLI: bash {written.parent.resolve() / result['reproduce_script']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
