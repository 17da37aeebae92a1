"""How the hf backend groups prompts: batches packed by token length, and prefill chunks inside a batch."""

from __future__ import annotations


def length_batches(lengths: list[int], batch_size: int, max_tokens: int | None, extra: int = 0) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (memory peaks show up at once).

    Rows are sorted by token length, so each batch pads only to its own longest row; a batch holds at most
    ``batch_size`` rows and at most ``max_tokens`` tokens of (its longest prompt + ``extra`` new tokens) x rows,
    which bounds the KV cache and attention memory (a 5,000-token page forms a small batch of its own instead of
    stretching 63 short rows to its length).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches:
            batch = batches[-1]
            width = lengths[batch[0]] + extra  # the batch's first row is its longest
            fits = max_tokens is None or (len(batch) + 1) * width <= max_tokens
            if len(batch) < batch_size and fits:
                batch.append(i)
                continue
        batches.append([i])
    return batches


def prefill_chunks(lengths: list[int], budget: int | None) -> list[tuple[slice, int]]:
    """Consecutive row ranges of a batch (rows sorted longest first) holding at most ``budget`` tokens (None: all
    rows at once) once padded to their own longest row; returns (rows, that row's length) pairs."""
    chunks: list[tuple[slice, int]] = []
    start = 0
    while start < len(lengths):
        width = max(lengths[start:])  # sorted input: lengths[start]; max() keeps unsorted input correct
        end = len(lengths) if budget is None else min(len(lengths), start + max(1, budget // width))
        chunks.append((slice(start, end), max(lengths[start:end])))
        start = end
    return chunks
