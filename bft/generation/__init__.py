"""Text generation backends (transformers on CPU/GPU, vLLM on GPU) behind one interface."""

from bft.generation.base import Completion, GenerationBackend, Sampling
from bft.generation.factory import make_backend

__all__ = ["Completion", "GenerationBackend", "Sampling", "make_backend"]
