"""Overlap of a dataset's instructions with the eval set, via :func:`bft.eval.decontaminate.decontaminate`."""

from __future__ import annotations

from collections.abc import Sequence

from bft.analysis.embeddings import Embedder, minilm_features
from bft.analysis.inputs import Dataset
from bft.eval.decontaminate import count_reasons, decontaminate


def eval_overlap(
    dataset: Dataset,
    eval_instructions: Sequence[str],
    *,
    ngram: int = 8,
    embed_threshold: float = 0.9,
    embedder: Embedder | None = None,
) -> dict[str, int]:
    """Records the decontamination filter would drop, per reason, plus ``total``.

    Instructions are checked; for raw web documents (no instructions) the document text is checked instead.
    """
    if not eval_instructions:
        return {"exact": 0, "ngram": 0, "embedding": 0, "total": 0}
    field = "output" if dataset.raw else "instruction"
    _, dropped = decontaminate(
        dataset.records,
        list(eval_instructions),
        ngram=ngram,
        embed_threshold=embed_threshold,
        fields=(field,),
        embedder=embedder or minilm_features,
    )
    counts = count_reasons(dropped)
    return {**counts, "total": len(dropped)}
