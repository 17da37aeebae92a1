"""PNG plots: 2-D embedding map of responses, token-length histograms, unique-trigram bars (matplotlib Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def project_2d(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Project features to 2-D with PCA or t-SNE (scikit-learn)."""
    if len(features) < 3:
        return np.zeros((len(features), 2))
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(features)


def plot_embedding_map(embeddings: Mapping[str, np.ndarray], path: Path, method: str = "pca", features: str = "minilm") -> Path:
    """Scatter of every dataset's responses in one shared 2-D projection, one colour per dataset."""
    names = [n for n, e in embeddings.items() if len(e)]
    fig, ax = plt.subplots(figsize=(7, 6))
    if names:
        stacked = np.concatenate([embeddings[n] for n in names])
        xy = project_2d(stacked, method)
        start = 0
        for name in names:
            end = start + len(embeddings[name])
            ax.scatter(xy[start:end, 0], xy[start:end, 1], s=6, alpha=0.45, label=f"{name} (n={end - start})")
            start = end
        ax.legend(markerscale=3, fontsize=8)
    ax.set_title(f"Responses: {features} embeddings, {method.upper()} 2-D map")
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    return _save(fig, path)


def plot_length_histograms(lengths: Mapping[str, Mapping[str, Sequence[int]]], path: Path) -> Path:
    """One panel per dataset: instruction and response token lengths, log-spaced bins."""
    names = list(lengths)
    cols = min(3, max(1, len(names)))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    every = [v for d in lengths.values() for k in ("instruction", "response") for v in d.get(k, []) if v > 0]
    top = max(every) if every else 10
    bins = np.geomspace(1, max(top, 10) * 1.05, 40)
    for ax, name in zip(axes.flat, names, strict=False):
        for key, colour in (("instruction", "tab:orange"), ("response", "tab:blue")):
            values = [v for v in lengths[name].get(key, []) if v > 0]
            if values:
                ax.hist(values, bins=bins, alpha=0.6, color=colour, label=f"{key} (median {int(np.median(values))})")
        ax.set_xscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("tokens (SmolLM2 tokenizer)")
        ax.set_ylabel("records")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle("Token lengths per dataset")
    return _save(fig, path)


def plot_trigrams(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Grouped bars of unique instruction / response trigrams: absolute and per 1,000 records."""
    names = [r["dataset"] for r in rows]
    x = np.arange(len(names))
    width = 0.38
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(names) + 4), 4.2))
    for ax, suffix, title in ((axes[0], "unique_trigrams", "unique word trigrams"), (axes[1], "trigrams_per_1k", "per 1,000 records")):
        for offset, prefix, colour in ((-width / 2, "instr", "tab:orange"), (width / 2, "resp", "tab:blue")):
            values = [r.get(f"{prefix}_{suffix}") or 0 for r in rows]
            label = "instructions" if prefix == "instr" else "responses"
            ax.bar(x + offset, values, width, label=label, color=colour)
        ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle("Diversity (BFT Fig. 3)")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
