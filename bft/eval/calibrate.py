"""``bft-eval calibrate``: run an annotator on pairs that carry gold judgements and measure how far it agrees.

Gold files are alpaca_eval annotation files (``instruction``, ``generator_1``, ``generator_2``, ``preference``; the
outputs themselves either inline as ``output_1`` / ``output_2`` or joined on ``instruction`` from alpaca_eval
output files: given as ``outputs_1=`` / ``outputs_2=``, or found next to the gold file, e.g.
``annotations/../model_outputs/<generator>.jsonl`` and a reference file whose ``generator`` field matches).

The pairs (``max_pairs`` of them, a seeded sample) are shown to the judge in a seeded random order that this module
chooses and records, with alpaca_eval's own order randomisation off, so position bias can be measured. The judge
runs through alpaca_eval's ``PairwiseAnnotator`` (its prompt, parser and cache). Results are cached as JSON under
``cache_dir`` (default ``~/.cache/bft/calibration``, or ``$BFT_CALIBRATION_DIR``), keyed by the judge, the gold
file's sha256, ``max_pairs`` and the seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bft.data.io import read_records
from bft.eval.annotators import LOCAL, local_judge_id, resolve_annotator, slug
from bft.eval.calibration import calibration_figures
from bft.eval.endpoint import ENDPOINT, Endpoint

CACHE_ENV = "BFT_CALIBRATION_DIR"


class CalibrationError(ValueError):
    """Bad gold data or options; the message is one line."""


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "bft" / "calibration")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- gold pairs


def _candidate_output_files(gold: Path) -> list[Path]:
    folders = [gold.parent, gold.parent / "model_outputs", gold.parent.parent, gold.parent.parent / "model_outputs"]
    seen: list[Path] = []
    for folder in folders:
        for path in sorted(folder.glob("*.json*")) if folder.is_dir() else []:
            if path.resolve() != gold.resolve() and path.resolve() not in seen:
                seen.append(path.resolve())
    return seen


def _generator_of(path: Path) -> str | None:
    """The ``generator`` of the first record of an output file (file stem when there is none)."""
    try:
        with path.open() as f:
            first = f.readline() if path.suffix == ".jsonl" else None
        record = json.loads(first) if first else (read_records(path).records or [{}])[0]
    except (OSError, ValueError):
        return None
    return str(record.get("generator") or path.stem) if isinstance(record, dict) and "output" in record else None


def find_outputs(gold: Path, generator: str) -> Path:
    """The alpaca_eval output file of ``generator`` near the gold file (by ``generator`` field, then file stem)."""
    candidates = _candidate_output_files(gold)
    for path in candidates:
        if _generator_of(path) == generator:
            return path
    for path in candidates:
        if path.stem == generator:
            return path
    raise CalibrationError(
        f"{gold}: no output file of generator '{generator}' found next to it; give outputs_1=/outputs_2= (alpaca_eval output files)"
    )


def _join(df: pd.DataFrame, outputs: Path, column: str) -> pd.DataFrame:
    records = pd.DataFrame(read_records(outputs).records)
    if not {"instruction", "output"} <= set(records.columns):
        raise CalibrationError(f"{outputs}: output records need 'instruction' and 'output'")
    records = records.drop_duplicates("instruction")[["instruction", "output"]].rename(columns={"output": column})
    return df.merge(records, on="instruction", how="left")


def load_gold(gold: Path, outputs_1: Path | None = None, outputs_2: Path | None = None) -> pd.DataFrame:
    """Gold pairs with both outputs: instruction, output_1, output_2, preference (in [1, 2]), gold annotator."""
    gold = Path(gold)
    if not gold.is_file():
        raise CalibrationError(f"gold file not found: {gold}")
    df = pd.DataFrame(read_records(gold).records)
    missing = [c for c in ("instruction", "preference") if c not in df.columns]
    if missing:
        raise CalibrationError(f"{gold}: gold annotations need {', '.join(missing)}")
    for column, given, gen_col in (("output_1", outputs_1, "generator_1"), ("output_2", outputs_2, "generator_2")):
        if column in df.columns and given is None:
            continue
        if given is None:
            if gen_col not in df.columns:
                raise CalibrationError(f"{gold}: no {column} and no {gen_col} to find it by; give outputs_{column[-1]}=")
            generators = df[gen_col].dropna().astype(str).unique()
            if len(generators) != 1:
                raise CalibrationError(f"{gold}: {gen_col} has {len(generators)} values; give outputs_{column[-1]}=")
            given = find_outputs(gold, generators[0])
        df = _join(df.drop(columns=[column], errors="ignore"), Path(given), column)
    df["preference"] = pd.to_numeric(df["preference"], errors="coerce").replace({0.0: 1.5})
    bad = df["preference"].isna() | ~df["preference"].between(1.0, 2.0)
    unjoined = df["output_1"].isna() | df["output_2"].isna()
    df = df[~bad & ~unjoined].reset_index(drop=True)
    df.attrs["n_dropped"] = int((bad | unjoined).sum())
    if df.empty:
        raise CalibrationError(f"{gold}: no gold pair with a valid preference and both outputs")
    return df


def sample_pairs(df: pd.DataFrame, max_pairs: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of ``max_pairs`` pairs (all pairs when None), in the gold file's order."""
    if max_pairs is None or max_pairs >= len(df):
        return df.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    return df.iloc[np.sort(rng.choice(len(df), size=max_pairs, replace=False))].reset_index(drop=True)


def shown_order(n: int, seed: int) -> np.ndarray:
    """``True`` where the judge is shown output_2 first: a seeded half/half random order."""
    rng = np.random.default_rng(seed + 1)
    return rng.permutation(np.arange(n) < n // 2) if n else np.zeros(0, dtype=bool)


# ---------------------------------------------------------------- running the judge


def judge_id(annotator: str, judge_model: str = "smollm2_135m", judge_adapter: str | None = None, judge_orders: int = 1) -> str:
    """The name a judge's calibration is cached and looked up under (a served judge: by its model name)."""
    if annotator == ENDPOINT:
        return f"{ENDPOINT}:{judge_model}" + (", both orders" if judge_orders == 2 else "")
    if annotator == LOCAL:
        return f"local:{local_judge_id(judge_model, judge_adapter, judge_orders)}"
    return annotator


def run_judge(
    pairs: pd.DataFrame, swapped: np.ndarray, annotator: str, work_dir: Path, caching_path: Path, seed: int = 0, **judge: Any
) -> np.ndarray:
    """The annotator's preferences on ``pairs``, shown in the given order, returned in the gold orientation.

    alpaca_eval's annotation cache (``caching_path``, keyed by instruction, the two outputs as shown and the
    annotator) is kept between calls, so a pair judged once in an order is not judged again in that order.
    """
    from bft.eval.score import float_preference_annotator

    shown = pairs[["instruction", "output_1", "output_2"]].copy()
    shown.loc[swapped, ["output_1", "output_2"]] = pairs.loc[swapped, ["output_2", "output_1"]].to_numpy()
    spec = resolve_annotator(annotator, work_dir / "annotator_configs", **judge)
    annotator_cls = float_preference_annotator()
    ann = annotator_cls(
        annotators_config=spec.annotators_config,
        caching_path=str(caching_path),
        seed=seed,
        is_randomize_output_order=False,
        **spec.annotator_kwargs,
    )
    annotated = pd.DataFrame(ann.annotate_pairs(shown.to_dict("records")))
    keyed = annotated.set_index(["instruction", "output_1", "output_2"])["preference"]
    prefs = np.array([keyed.get((r.instruction, r.output_1, r.output_2), np.nan) for r in shown.itertuples()], dtype=float)
    prefs = np.where(prefs == 0.0, 1.5, prefs)  # alpaca_eval marks identical outputs as 0
    return np.where(swapped, 3.0 - prefs, prefs)


# ---------------------------------------------------------------- cache


def cache_file(cache_dir: Path, jid: str, gold_sha: str, max_pairs: int | None, seed: int) -> Path:
    return Path(cache_dir) / f"{slug(jid, 60)}__{gold_sha[:16]}__n{max_pairs or 'all'}__s{seed}.json"


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def latest_calibration(jid: str, cache_dir: Path | None = None) -> dict[str, Any] | None:
    """The most recent cached calibration of judge ``jid`` (any gold file), or None."""
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    found = []
    for path in folder.glob(f"{slug(jid, 60)}__*.json") if folder.is_dir() else []:
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if result.get("annotator_id") == jid:
            found.append(result)
    return max(found, key=lambda r: r.get("created_at", "")) if found else None


def calibrate(
    gold: Path,
    annotator: str = LOCAL,
    *,
    outputs_1: Path | None = None,
    outputs_2: Path | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
    refresh: bool = False,
    judge_model: str = "smollm2_135m",
    judge_adapter: str | None = None,
    judge_orders: int = 1,
    judge_batch_size: int = 4,
    judge_dtype: str = "auto",
    endpoint: Endpoint | None = None,
) -> dict[str, Any]:
    """Calibrate ``annotator`` against the gold file; a cached result for the same judge, gold, n and seed is reused.

    A served judge (``annotator=openai_compatible``) is named by ``endpoint.model``; ``judge_model`` is ignored."""
    gold = Path(gold)
    if max_pairs is not None and max_pairs < 1:
        raise CalibrationError(f"max_pairs must be >= 1, got {max_pairs}")
    if judge_orders not in (1, 2):
        raise CalibrationError(f"judge_orders must be 1 or 2, got {judge_orders}")
    if annotator == ENDPOINT:
        if endpoint is None:
            raise CalibrationError(f"annotator '{ENDPOINT}' needs judge_url and judge_model")
        judge_model = endpoint.model
    jid = judge_id(annotator, judge_model, judge_adapter, judge_orders)
    gold_sha = file_sha256(gold) if gold.is_file() else ""
    path = cache_file(cache_dir or default_cache_dir(), jid, gold_sha, max_pairs, seed)
    if path.is_file() and not refresh:
        return {**json.loads(path.read_text()), "cached": str(path)}
    all_pairs = load_gold(gold, outputs_1, outputs_2)
    pairs = sample_pairs(all_pairs, max_pairs, seed)
    swapped = shown_order(len(pairs), seed)
    judge_kwargs: dict[str, Any] = {}
    if annotator == LOCAL:
        judge_kwargs = {
            "judge_model": judge_model,
            "judge_adapter": judge_adapter,
            "judge_orders": 1,  # both orders are two one-order passes here, so the one-order figures come for free
            "judge_batch_size": judge_batch_size,
            "judge_dtype": judge_dtype,
        }
    elif annotator == ENDPOINT:
        judge_kwargs = {"endpoint": endpoint, "judge_orders": 1}  # both orders = two one-order passes, as above
    one_order_id = judge_id(annotator, judge_model, judge_adapter, 1)
    caching_path = Path(cache_dir or default_cache_dir()) / "annotations" / f"{slug(one_order_id, 60)}.json"
    caching_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bft-calibrate-") as work:
        prefs = run_judge(pairs, swapped, annotator, Path(work), caching_path, seed=seed, **judge_kwargs)
        one_order = prefs
        if judge_orders == 2:  # same pairs, the other order; averaging the preferences = judges.combine_orders
            flipped = run_judge(pairs, ~swapped, annotator, Path(work), caching_path, seed=seed, **judge_kwargs)
            prefs = (one_order + flipped) / 2.0
    len_1 = pairs["output_1"].astype(str).str.len().to_numpy()
    len_2 = pairs["output_2"].astype(str).str.len().to_numpy()
    gold_annotators = sorted(all_pairs["annotator"].dropna().astype(str).unique()) if "annotator" in all_pairs else []
    result = {
        "annotator_id": jid,
        "annotator": annotator,
        "gold": str(gold.resolve()),
        "gold_name": gold.name,
        "gold_sha256": gold_sha,
        "gold_annotator": ",".join(gold_annotators) or None,
        "n_gold": len(all_pairs),
        "n_gold_dropped": all_pairs.attrs.get("n_dropped", 0),
        "n_pairs": len(pairs),
        "max_pairs": max_pairs,
        "seed": seed,
        "figures": calibration_figures(prefs, pairs["preference"].to_numpy(), len_1, len_2, swapped, seed=seed),
        "one_order_figures": calibration_figures(one_order, pairs["preference"].to_numpy(), len_1, len_2, swapped, seed=seed)
        if judge_orders == 2
        else None,
        "pairs": {
            "instruction": pairs["instruction"].tolist(),
            "gold": pairs["preference"].tolist(),
            "judge": [None if np.isnan(p) else float(p) for p in prefs],
            "shown_swapped": [bool(x) for x in swapped],
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(path, result)
    return {**result, "cached": None, "written": str(path)}


# ---------------------------------------------------------------- the run summary's calibration line


def calibration_brief(cal: dict[str, Any] | None) -> dict[str, Any] | None:
    """The few figures a run summary keeps of a cached calibration (None when uncalibrated)."""
    if not cal:
        return None
    figs = cal["figures"]
    return {
        "annotator_id": cal["annotator_id"],
        "gold": cal["gold_name"],
        "gold_annotator": cal.get("gold_annotator"),
        "n_pairs": cal["n_pairs"],
        "agreement": figs["judge"]["agreement"]["value"],
        "length_balanced_agreement": figs["judge"]["length_balanced_agreement"]["value"],
        "position_bias": figs["judge"]["position_bias"]["value"],
        "longer_wins_agreement": figs["longer_wins"]["agreement"]["value"],
        "created_at": cal.get("created_at"),
    }


def judge_calibration(
    annotator: str, judge_model: str = "smollm2_135m", judge_orders: int = 1, cache_dir: Path | None = None
) -> dict[str, Any] | None:
    """The judge's last cached calibration, in brief, or None."""
    return calibration_brief(latest_calibration(judge_id(annotator, judge_model, None, judge_orders), cache_dir))


def calibration_note(brief: dict[str, Any] | None, annotator: str, judge_model: str = "smollm2_135m") -> str:
    """One line for the run summary: the judge's measured agreement, or that it has none."""

    def pct(value: Any) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    if not brief:
        hint = f" judge_model={judge_model}" if annotator in (LOCAL, ENDPOINT) else ""
        hint += " judge_url=<base URL>" if annotator == ENDPOINT else ""
        return (
            f"judge calibration: none ('{annotator}' judge uncalibrated; measure it with "
            f"bft-eval calibrate annotator={annotator}{hint} gold=<alpaca_eval annotation file>)"
        )
    return (
        f"judge calibration: agrees with {brief.get('gold_annotator') or 'gold'} on {pct(brief['agreement'])} of "
        f"{brief['n_pairs']} pairs of {brief['gold']} (length-balanced {pct(brief['length_balanced_agreement'])}, "
        f"picks first shown {pct(brief['position_bias'])}; longer-wins baseline {pct(brief['longer_wins_agreement'])}, chance 50%)"
    )
