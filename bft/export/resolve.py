"""Find a run's artifacts: from a run folder (its ``summary.json``) or any artifact key, through manifest upstream keys."""

from __future__ import annotations

import json
from pathlib import Path

from bft.artifacts.store import MANIFEST, Artifact
from bft.config.validate import ConfigError


def _load(folder: Path) -> Artifact:
    manifest = json.loads((folder / MANIFEST).read_text())
    return Artifact(stage=folder.parent.name, key=folder.name, path=folder, manifest=manifest, reused=True)


def _find_key(root: Path, key: str) -> Path:
    found = [p.parent for p in root.glob(f"*/{key}/{MANIFEST}")]
    if not found:
        raise ConfigError(f"run={key}: no finished artifact with this key under {root} (set --artifacts-dir)")
    return found[0]


def lineage(root: Path, start: Path) -> dict[str, Artifact]:
    """Every artifact ``start`` was computed from, by stage name (the last curation iteration as ``curate``)."""
    found: dict[str, Artifact] = {}
    todo = [start]
    while todo:
        folder = todo.pop(0)  # breadth first: the nearest artifact of a stage wins
        artifact = _load(folder)
        if artifact.stage in found and found[artifact.stage].key != artifact.key:
            continue  # keep the nearest one (curate_1 before curate_0)
        found[artifact.stage] = artifact
        for key in artifact.manifest.get("upstream", {}).values():
            todo.append(_find_key(root, key))
    return found


def resolve_run(run: str, artifacts_dir: str | None = None) -> tuple[dict[str, Artifact], dict | None]:
    """(artifacts by stage, the run's summary or None) for a run folder or an artifact key (final_model, evaluate...)."""
    path = Path(run).expanduser()
    summary = None
    if (path / "summary.json").is_file():
        summary = json.loads((path / "summary.json").read_text())
        final = Path(summary["final_model"])  # <root>/final_model/<key>/model
        root = final.parents[2]
        start = root / "evaluate" / summary["stages"]["evaluate"]["key"]
        if not (start / MANIFEST).is_file():
            start = final.parent
    elif path.is_dir() and (path / MANIFEST).is_file():
        root, start = path.resolve().parents[1], path.resolve()
    else:
        root = Path(artifacts_dir or "artifacts").expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(f"run={run}: not a run folder with summary.json, an artifact folder, or a key under {root}")
        start = _find_key(root, run)
    artifacts = lineage(root, start)
    if "final_model" not in artifacts and "train_data" not in artifacts:
        raise ConfigError(f"run={run}: {start} was not computed from a training set or a final model; export a later stage's key")
    return artifacts, summary
