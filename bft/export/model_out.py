"""The final model as a ``save_pretrained`` folder: the adapter merged into the base model, or the adapter itself."""

from __future__ import annotations

import shutil
from pathlib import Path

from bft.artifacts.store import Artifact

_TRAINING_ONLY = ("train_metrics.json", "checkpoints")


def write_model(final: Artifact, out: Path, merge: bool = True) -> tuple[str, bool]:
    """Write the model into ``out``; return (base model name, merged?). Full fine-tunes are copied as they are."""
    source = final.path / "model"
    base = str(final.manifest.get("base_model", ""))
    is_adapter = bool(final.manifest.get("is_adapter", (source / "adapter_config.json").is_file()))
    if out.exists():
        shutil.rmtree(out)
    if is_adapter and merge:
        from bft.models.registry import load_model

        loaded = load_model(base, dtype="auto", adapter=str(source))
        loaded.model.save_pretrained(out)
        loaded.tokenizer.save_pretrained(out)
        return base, True
    shutil.copytree(source, out, ignore=shutil.ignore_patterns(*_TRAINING_ONLY))
    return base, not is_adapter
