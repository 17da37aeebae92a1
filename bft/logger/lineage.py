"""W&B lineage: one job per computed stage (``job_type`` = the stage), its output an artifact that uses its inputs.

A store artifact ``<stage>/<key>`` becomes the W&B artifact ``<stage>-<key>``: its ``manifest.json`` plus a
reference (``file://``, not uploaded, not re-hashed) to the folder, or with ``logger.upload_artifacts=true`` the
folder's files themselves (uploaded on sync, so another machine can fetch them). Built the same way from the same folder it has
the same digest, so a later job that *uses* it - in this run, in another job of a sweep, or after a reuse - links
to the version the computing job logged, and the lineage graph reads seed -> ... -> final model -> evaluation.
Offline runs cannot resolve artifacts by name, so a use is recorded the way W&B records the use of a draft
artifact (``use_after_commit``); ``wandb sync`` replays it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from bft.artifacts.store import MANIFEST, Artifact

log = logging.getLogger(__name__)

# columns of the sample tables, per stage output file: (file, [(column, record field), ...])
SAMPLE_COLUMNS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "augment": ("candidates.jsonl", [("id", "id"), ("instruction", "instruction"), ("original", "text")]),
    "curate": (
        "scored.jsonl",
        [("id", "id"), ("instruction", "instruction"), ("original", "text"), ("score", "score"), ("kept", "kept")],
    ),
    "rewrite": (
        "generated.jsonl",
        [("id", "id"), ("instruction", "instruction"), ("original", "text"), ("score", "score"), ("rewrite", "output")],
    ),
    "train_data": ("train.jsonl", [("prompt", "prompt"), ("completion", "completion"), ("origin", "origin")]),
    "eval_outputs": ("model_outputs.json", [("instruction", "instruction"), ("output", "output"), ("generator", "generator")]),
}


def artifact_name(artifact: Artifact) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{artifact.stage}-{artifact.key}")


def artifact_type(artifact: Artifact) -> str:
    if (artifact.path / "model").is_dir():
        return "model"
    if artifact.stage == "evaluate":
        return "evaluation"
    return "dataset"


def wandb_artifact(artifact: Artifact, upload: bool = False):
    """The W&B artifact of a finished store artifact; the same folder always gives the same digest."""
    import wandb

    manifest = artifact.manifest
    metadata = {
        "stage": artifact.stage,
        "key": artifact.key,
        "counts": manifest.get("counts", {}),
        "metrics": _scalars(manifest.get("metrics", {})),
        "upstream": manifest.get("upstream", {}),
    }
    result = wandb.Artifact(name=artifact_name(artifact), type=artifact_type(artifact), metadata=metadata)
    result.add_file(str(artifact.path / MANIFEST), name=MANIFEST)
    if upload:
        result.add_dir(str(artifact.path), name="files")
    else:
        result.add_reference(artifact.path.resolve().as_uri(), name="files", checksum=False)
    return result


def _scalars(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if isinstance(v, int | float | str | bool) or v is None}


def use(run, artifact: Artifact, upload: bool = False) -> None:
    """Record that ``run`` reads ``artifact`` (online: resolved by W&B; offline: as a draft use, linked on sync)."""
    built = wandb_artifact(artifact, upload)
    if run.settings._offline:
        run._log_artifact(built, aliases=[], is_user_created=True, use_after_commit=True)
    else:
        run.use_artifact(built)


def sample_rows(artifact: Artifact, limit: int) -> tuple[list[str], list[list[Any]]]:
    """Columns and the first ``limit`` records of a stage's output, for a W&B table (empty if the stage has none)."""
    spec = SAMPLE_COLUMNS.get(artifact.stage)
    if artifact.stage == "evaluate":
        return _judged_rows(artifact, limit)
    if spec is None or limit <= 0:
        return [], []
    file, columns = spec
    path = artifact.path / file
    if not path.is_file():
        return [], []
    records = _first_records(path, limit)
    return [c for c, _ in columns], [[_cell(r.get(field)) for _, field in columns] for r in records]


def _first_records(path: Path, limit: int) -> list[dict[str, Any]]:
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return [r for r in data if isinstance(r, dict)][:limit]
    records = []
    with path.open() as handle:
        for line in handle:
            if line.strip():
                records.append(json.loads(line))
            if len(records) >= limit:
                break
    return records


def _judged_rows(artifact: Artifact, limit: int) -> tuple[list[str], list[list[Any]]]:
    """Eval outputs beside the reference with the judge's preference (2 = the model's output wins)."""
    candidates = (artifact.path / "annotations_cache.json", artifact.path / "alpaca_eval" / "annotations.json")
    annotations = next((p for p in candidates if p.is_file()), None)
    if annotations is None:
        return [], []
    rows = [r for r in json.loads(annotations.read_text()) if isinstance(r, dict)][:limit]
    columns = ["instruction", "output", "reference", "preference", "judge"]
    fields = ["instruction", "output_2", "output_1", "preference", "annotator"]
    return columns, [[_cell(r.get(f)) for f in fields] for r in rows]


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, int | float | bool):
        return value
    return str(value)[:2000]
