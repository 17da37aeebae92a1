"""Finished runs from the W&B API, as rows of the same frame as local ``summary.json`` files.

The pipeline writes its whole summary into the W&B run summary, so the same flattening applies. Any failure
(no network, no credentials, unknown project) becomes a :class:`WandbUnavailable` with a readable reason.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bft.report.load import flatten_summary, frame


class WandbUnavailable(RuntimeError):
    """The W&B API could not be reached or queried."""


def _plain(value: Any) -> Any:
    """W&B summary values (SummarySubDict and friends) as plain dicts / lists."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def load_wandb_runs(path: str, timeout: int = 20) -> pd.DataFrame:
    """Finished runs of ``ENTITY/PROJECT`` that carry a bft summary (others are skipped)."""
    if path.count("/") != 1:
        raise WandbUnavailable(f"--wandb expects ENTITY/PROJECT, got {path!r}")
    try:
        import wandb

        api = wandb.Api(timeout=timeout)
        runs = list(api.runs(path, filters={"state": "finished"}))
    except Exception as err:  # network, auth and API errors all mean "no W&B runs this time"
        raise WandbUnavailable(f"could not query W&B project {path!r} ({type(err).__name__}: {err})") from err
    rows = []
    for run in runs:
        summary = _plain(getattr(run.summary, "_json_dict", None) or dict(run.summary))
        if not isinstance(summary.get("run"), dict):
            continue
        rows.append(flatten_summary(summary, source="wandb", path=None) | {"run_folder": run.url})
    return frame(rows)
