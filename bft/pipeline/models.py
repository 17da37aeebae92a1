"""Turn a trained-model artifact (or a model name) into a generation backend."""

from __future__ import annotations

from bft.artifacts.store import Artifact
from bft.config.schema import GenerationConfig
from bft.generation.base import GenerationBackend
from bft.generation.factory import make_backend


def model_ref(artifact: Artifact) -> tuple[str, str | None]:
    """(base model name or full-model folder, adapter folder or None) of a training artifact."""
    model_dir = str(artifact.file("model"))
    if artifact.manifest.get("is_adapter", True):
        return artifact.manifest["base_model"], model_dir
    return model_dir, None


def backend_for(gen_cfg: GenerationConfig, name: str, adapter: str | None) -> tuple[GenerationBackend, object]:
    """The backend and the tokenizer it already loaded (prompts are rendered with that tokenizer's template)."""
    backend = make_backend(gen_cfg, name, adapter=adapter)
    return backend, backend.tokenizer
