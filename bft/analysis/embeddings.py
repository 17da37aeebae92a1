"""Sentence features for MAUVE and the embedding map: MiniLM (default, offline) or GPT-2 (when cached locally).

MiniLM is the all-MiniLM-L6-v2 model shared with :mod:`bft.eval.decontaminate` (loaded once per process).
GPT-2 features are the last token's final hidden state, as in the MAUVE paper (the BFT paper used GPT-2 features).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

FEATURES = ("minilm", "gpt2")
Embedder = Callable[[list[str]], np.ndarray]


def minilm_features(texts: list[str]) -> np.ndarray:
    """Unit-normalised MiniLM embeddings, shape (len(texts), 384)."""
    from bft.eval.decontaminate import minilm_embed

    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    return minilm_embed(list(texts))


@lru_cache(maxsize=1)
def _gpt2():
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained("gpt2", local_files_only=True)
    model = AutoModel.from_pretrained("gpt2", local_files_only=True).eval()
    return tokenizer, model


def gpt2_available() -> tuple[bool, str]:
    """(True, "") when transformers can load "gpt2" from the local cache, else (False, why)."""
    try:
        _gpt2()
    except Exception as err:  # noqa: BLE001 - any load failure means: not available offline
        return False, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return True, ""


def gpt2_features(texts: list[str], max_tokens: int = 512, batch_size: int = 8) -> np.ndarray:
    """Final hidden state of each text's last token under GPT-2 (texts truncated to ``max_tokens``)."""
    import torch

    tokenizer, model = _gpt2()
    feats = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            for text in texts[start : start + batch_size]:
                ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"]
                feats.append(model(input_ids=ids).last_hidden_state[0, -1].float().numpy())
    return np.stack(feats) if feats else np.zeros((0, 768), dtype=np.float32)


def choose_embedder(features: str, warn: Callable[[str], None] = print) -> tuple[str, Embedder]:
    """-> (features actually used, embedder); gpt2 falls back to minilm, with a message, when not available."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    if features == "gpt2":
        ok, why = gpt2_available()
        if ok:
            return "gpt2", gpt2_features
        warn(f"GPT-2 features unavailable offline ({why}); falling back to MiniLM features")
    return "minilm", minilm_features


class CachedEmbedder:
    """Wraps an embedder so each distinct text is embedded once per process (responses reused by the overlap check)."""

    def __init__(self, embed: Embedder) -> None:
        self.embed = embed
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            self.cache.update(zip(missing, self.embed(missing), strict=True))
        if not texts:
            return self.embed([])
        return np.stack([self.cache[t] for t in texts])
