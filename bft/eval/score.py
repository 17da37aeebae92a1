"""Score model outputs against reference outputs with ``alpaca_eval.evaluate``, writing only into ``out_dir``.

Every alpaca_eval default that writes inside the installed package is overridden: the annotation cache lives in
``out_dir/annotations_cache.json``, there is no precomputed leaderboard to update, and the length-control GLM is fitted
with ``save_weights_dir=None``. The length-controlled win rate needs alpaca_eval's calibration file ``df_gamed.csv``
(from the HF cache, the hub, or ``lc_weights_dir``) and the full 805-instruction set in its official order; when it
cannot be had, it is ``None`` with ``lc_unavailable_reason`` -- never a made-up figure.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from bft.eval.alpaca_eval_cli import patch_alpaca_eval, write_reproduce_script, write_standalone_config
from bft.eval.annotators import check_annotator_ready, resolve_annotator
from bft.eval.sets import EvalSetError, download_hub_file

if TYPE_CHECKING:
    from bft.eval.endpoint import Endpoint

LC_FILE = "df_gamed.csv"  # alpaca_eval's GLM regularisation data (gamed baselines, instruction difficulty)
AE_SET_SIZE = 805
LEADERBOARD_COLUMNS = (
    "model",
    "win_rate",
    "standard_error",
    "discrete_win_rate",
    "length_controlled_winrate",
    "lc_standard_error",
    "n_total",
    "n_wins",
    "n_wins_base",
    "n_draws",
    "n_missing",
    "avg_length",
    "annotator",
    "judge_model",
    "alpaca_eval_version",
    "lc_unavailable_reason",
)

log = logging.getLogger(__name__)


def alpaca_eval_version() -> str:
    return importlib.metadata.version("alpaca_eval")


def _plain(value: Any) -> Any:
    """numpy / pandas scalars -> Python scalars (NaN -> None) for JSON."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


# ---------------------------------------------------------------- length control


def locate_lc_file(lc_weights_dir: str | Path | None) -> tuple[Path | None, str | None]:
    """``df_gamed.csv`` from ``lc_weights_dir``, else the HF cache / hub; ``(None, reason)`` when unavailable."""
    if lc_weights_dir is not None:
        path = Path(lc_weights_dir).expanduser() / LC_FILE
        if path.is_file():
            return path, None
        return None, f"{LC_FILE} not found in lc_weights_dir={lc_weights_dir}"
    try:
        return download_hub_file(LC_FILE, "length-controlled win rate", hint=f"set lc_weights_dir to a folder holding {LC_FILE}"), None
    except EvalSetError as e:
        return None, str(e)


@contextmanager
def _glm_calibration_from(path: Path) -> Iterator[None]:
    """Point alpaca_eval's GLM at a local ``df_gamed.csv`` (it otherwise always calls ``hf_hub_download``)."""
    from alpaca_eval.metrics import glm_winrate

    original = glm_winrate.hf_hub_download

    def local_first(*args: Any, filename: str, **kwargs: Any) -> str:
        return str(path) if filename == LC_FILE else original(*args, filename=filename, **kwargs)

    glm_winrate.hf_hub_download = local_first
    try:
        yield
    finally:
        glm_winrate.hf_hub_download = original


def length_controlled(
    df: pd.DataFrame, lc_weights_dir: str | Path | None = None, save_weights_dir: str | Path | None = None
) -> tuple[dict[str, float], str | None]:
    """alpaca_eval's length-controlled win rate, or ``({}, reason)`` when it cannot be computed honestly."""
    needed = [c for c in ("output_1", "output_2", "generator_1", "generator_2") if c not in df.columns]
    if needed:
        return {}, f"annotations lack {', '.join(needed)} (output lengths are needed by the length-control GLM)"
    if len(df) != AE_SET_SIZE:
        return {}, (
            f"needs all {AE_SET_SIZE} AlpacaEval instructions in official order (the GLM uses per-instruction "
            f"difficulty); got {len(df)} judged pairs"
        )
    path, reason = locate_lc_file(lc_weights_dir)
    if path is None:
        return {}, reason
    from alpaca_eval.metrics import get_length_controlled_winrate

    try:
        with _glm_calibration_from(path):
            metrics = get_length_controlled_winrate(
                df.reset_index(drop=True), save_weights_dir=save_weights_dir, is_add_glm_preference_inplace=False
            )
    except Exception as e:  # noqa: BLE001 - any GLM failure is reported, never replaced by a figure
        return {}, f"length-control GLM failed: {type(e).__name__}: {e}"
    return {k: float(metrics[k]) for k in ("length_controlled_winrate", "lc_standard_error")}, None


# ---------------------------------------------------------------- metrics


def _valid_preferences(df: pd.DataFrame) -> pd.DataFrame:
    if "preference" not in df.columns:
        raise ValueError("annotations have no 'preference' field")
    df = df.copy()
    df["preference"] = pd.to_numeric(df["preference"], errors="coerce").replace({0.0: 1.5})
    return df[df["preference"].between(1.0, 2.0)]


def metrics_from_annotations(
    annotations: list[dict[str, Any]] | pd.DataFrame,
    *,
    lc_weights_dir: str | Path | None = None,
    save_weights_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Leaderboard metrics from judgements (preference 1 = reference wins, 2 = model wins, 1.5 = draw).

    Win rate, standard error and discrete win rate are alpaca_eval's own (``alpaca_eval.metrics.get_winrate``, the
    function behind ``pairwise_to_winrate``); the length-controlled win rate is alpaca_eval's GLM or ``None`` with
    ``lc_unavailable_reason``. ``avg_length`` (characters of the model outputs) needs ``output_2``.
    """
    from alpaca_eval.metrics import get_winrate

    df = annotations.reset_index(drop=True) if isinstance(annotations, pd.DataFrame) else pd.DataFrame(annotations)
    valid = _valid_preferences(df)
    if valid.empty:
        raise ValueError("no valid preference in [1, 2] among the annotations")
    base = get_winrate(valid)
    out: dict[str, Any] = {k: _plain(base[k]) for k in ("win_rate", "standard_error", "discrete_win_rate")}
    out.update({k: _plain(base[k]) for k in ("n_total", "n_wins", "n_wins_base", "n_draws")})
    out["n_missing"] = int(len(df) - len(valid))
    if "output_2" in df.columns:
        out["avg_length"] = int(df["output_2"].astype(str).str.len().mean())
    lc, reason = length_controlled(valid, lc_weights_dir, save_weights_dir)
    out["length_controlled_winrate"] = lc.get("length_controlled_winrate")
    out["lc_standard_error"] = lc.get("lc_standard_error")
    out["lc_unavailable_reason"] = reason
    return out


def _alpaca_eval_metric(
    annotations: Any, save_weights_dir: str | Path | None = None, lc_weights_dir: str | Path | None = None
) -> dict[str, Any]:
    """``fn_metric`` for ``alpaca_eval.evaluate``: alpaca_eval's win rates plus LC-or-reason."""
    metrics = metrics_from_annotations(annotations, lc_weights_dir=lc_weights_dir, save_weights_dir=save_weights_dir)
    metrics.pop("avg_length", None)  # evaluate() computes its own from the model outputs
    return metrics


# ---------------------------------------------------------------- scoring


def _as_frame(records: list[dict[str, Any]] | pd.DataFrame, what: str, default_generator: str) -> pd.DataFrame:
    df = pd.DataFrame(records).copy()
    missing = [c for c in ("instruction", "output") if c not in df.columns]
    if missing or df.empty:
        raise ValueError(f"{what}: need non-empty records with instruction and output (missing: {missing})")
    df["instruction"] = df["instruction"].astype(str)
    df["output"] = df["output"].fillna("").astype(str)
    if "generator" not in df.columns:
        df["generator"] = default_generator
    df["generator"] = df["generator"].fillna(default_generator).astype(str)
    if df["instruction"].duplicated().any():
        raise ValueError(f"{what}: duplicated instructions (alpaca_eval joins outputs on the instruction)")
    return df


def float_preference_annotator() -> type:
    """alpaca_eval's ``PairwiseAnnotator`` with cached preferences read back as floats (pandas >= 3).

    See :func:`bft.eval.alpaca_eval_cli.patch_alpaca_eval`, which this applies.
    """
    patch_alpaca_eval()
    from alpaca_eval.annotators import PairwiseAnnotator

    return PairwiseAnnotator


def _write_records(path: Path, df: pd.DataFrame) -> None:
    """The outputs alpaca_eval judges, as the JSON records its CLI reads (``--model_outputs`` / ``--reference_outputs``)."""
    path.write_text(df.to_json(orient="records", indent=2, force_ascii=False) + "\n")


def write_leaderboard(result: dict[str, Any], out_dir: Path, stem: str = "leaderboard") -> None:
    """``<stem>.json`` (everything) and ``<stem>.csv`` (one row of the scalar columns) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2, default=_plain) + "\n")
    row = {k: result.get(k) for k in LEADERBOARD_COLUMNS}
    pd.DataFrame([row]).to_csv(out_dir / f"{stem}.csv", index=False)


def score_outputs(
    model_outputs: list[dict[str, Any]],
    reference_outputs: list[dict[str, Any]],
    annotator: str,
    out_dir: Path,
    *,
    judge_model: str = "smollm2_135m",
    judge_adapter: str | None = None,
    judge_dtype: str = "auto",
    judge_batch_size: int = 4,
    judge_orders: int = 1,
    judge_device: str = "auto",
    seed: int = 0,
    lc_weights_dir: str | Path | None = None,
    decoding: dict[str, Any] | None = None,
    name: str | None = None,
    endpoint: Endpoint | None = None,
) -> dict[str, Any]:
    """Judge ``model_outputs`` against ``reference_outputs`` (joined on ``instruction``) with alpaca_eval.

    Writes, all under ``out_dir``: ``annotations_cache.json`` (alpaca_eval's cache; re-runs reuse it),
    ``annotator_configs/`` (local and served judges' configs, naming the judge: usable by alpaca_eval's CLI as they
    are), ``model_outputs.json`` / ``reference_outputs.json`` (the judged pairs' outputs), ``alpaca_eval/`` (its own
    annotations.json and leaderboard.csv), ``leaderboard.json`` / ``leaderboard.csv`` (the returned dict) and
    ``reproduce.sh`` (alpaca_eval's CLI on those files and a copy of the cache: the same win rate; its name is
    ``result["reproduce_script"]``). ``decoding`` records how the model outputs were
    generated (temperature, top_p, ...) in the provenance. ``endpoint``: the served judge of
    ``annotator=openai_compatible`` (:func:`bft.eval.endpoint.endpoint_from`).
    """
    check_annotator_ready(annotator, endpoint)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    model_df = _as_frame(model_outputs, "model_outputs", name or "model")
    ref_df = _as_frame(reference_outputs, "reference_outputs", "reference")
    name = name or str(model_df["generator"].iloc[0])
    model_df["generator"] = name
    unmatched = int((~model_df["instruction"].isin(ref_df["instruction"])).sum())
    if unmatched == len(model_df):
        raise ValueError("no model output shares an instruction with the reference outputs")
    if unmatched:
        log.warning("%d model outputs have no reference output and are not judged", unmatched)
    ref_df = ref_df[ref_df["instruction"].isin(model_df["instruction"])]  # keeps the eval set's order

    spec = resolve_annotator(
        annotator,
        out_dir / "annotator_configs",
        judge_model=judge_model,
        judge_adapter=judge_adapter,
        judge_dtype=judge_dtype,
        judge_batch_size=judge_batch_size,
        judge_orders=judge_orders,
        judge_device=judge_device,
        endpoint=endpoint,
    )
    config = write_standalone_config(spec.annotators_config, spec.annotator_kwargs)
    _write_records(out_dir / "model_outputs.json", model_df)
    _write_records(out_dir / "reference_outputs.json", ref_df)
    patch_alpaca_eval()
    import alpaca_eval

    df_leaderboard, _ = alpaca_eval.evaluate(
        model_outputs=model_df,
        reference_outputs=ref_df,
        annotators_config=str(config),
        name=name,
        output_path=out_dir / "alpaca_eval",
        precomputed_leaderboard=None,
        is_cache_leaderboard=False,
        is_return_instead_of_print=True,
        fn_metric=partial(_alpaca_eval_metric, lc_weights_dir=lc_weights_dir),
        metric_kwargs={"save_weights_dir": None},
        sort_by="win_rate",
        caching_path=str(out_dir / "annotations_cache.json"),
        seed=seed,
    )
    row = {k: _plain(v) for k, v in df_leaderboard.loc[name].to_dict().items()}
    result: dict[str, Any] = {"model": name, "reference": sorted(ref_df["generator"].unique().tolist())}
    result.update({k: row.get(k) for k in LEADERBOARD_COLUMNS if k in row})
    result.update(
        {
            "annotator": annotator,
            "judge_model": spec.judge,
            "annotator_settings": spec.settings,
            "alpaca_eval_version": alpaca_eval_version(),
            "decoding": decoding or {},
            "seed": seed,
            "n_submitted": len(model_df),
            "n_unmatched": unmatched,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    script = write_reproduce_script(out_dir, config, name, seed, result.get("win_rate"))
    result["reproduce_script"] = script.name  # next to leaderboard.json (the folder may be renamed: no absolute path)
    write_leaderboard(result, out_dir)
    return result
