"""Log an analysis (table and images) to a Weights & Biases run object, when one is given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def log_to_wandb(run: Any, results: Sequence[Mapping[str, Any]], out_dir: str | Path, prefix: str = "analysis") -> bool:
    """Log ``results`` (one dict per dataset) as a ``wandb.Table`` and every PNG in ``out_dir`` as an image.

    ``run`` is a wandb run (``wandb.init(...)``) or None (then nothing happens and False is returned).
    """
    if run is None:
        return False
    import wandb

    keys = list(dict.fromkeys(k for r in results for k in r))
    table = wandb.Table(columns=keys, data=[[_cell(r.get(k)) for k in keys] for r in results])
    payload: dict[str, Any] = {f"{prefix}/table": table}
    for png in sorted(Path(out_dir).glob("*.png")):
        payload[f"{prefix}/{png.stem}"] = wandb.Image(str(png))
    run.log(payload)
    for r in results:  # headline numbers as summary values, e.g. analysis/seed_human/mauve
        for key in ("mauve", "resp_unique_trigrams", "resp_tokens_mean", "overlap_total"):
            if isinstance(r.get(key), int | float):
                run.summary[f"{prefix}/{r['dataset']}/{key}"] = r[key]
    return True


def _cell(value: Any) -> Any:
    return "" if value is None else value
