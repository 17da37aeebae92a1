"""Tokenisation, batching and collation for supervised fine-tuning.

Every example is rendered with :func:`bft.prompts.render_chat` (the same function inference uses), tokenised as
``prompt + completion`` and labelled ``-100`` on the prompt, so the loss covers the assistant text and the
template's end-of-turn marker only.

Three ``grouping`` modes build the micro-batches:

- ``length``: shuffle, cut into megabatches of ``50 x micro_batch_size`` examples, sort each megabatch by length
  and cut it into micro-batches (shuffled again), then pad each batch on the right to its own longest row.
- ``packing``: pack several examples into rows of at most ``max_seq_len`` tokens (best-fit decreasing). Each
  example restarts its ``position_ids`` at 0; with no 2D attention mask, transformers turns the resets into a
  block-diagonal causal mask (``masking_utils.find_packed_sequence_indices``), so no token attends across
  examples. ``tests/test_sft.py`` checks that a packed row gives the same per-example loss as separate rows.
- ``none``: plain shuffled batches, padded on the right.

Right-padded batches carry no attention mask: with causal attention a real token never sees the padding that
follows it, and the padding's outputs carry label ``-100``, so the mask would change nothing but would force
the slower masked attention kernel.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bft.prompts import render_chat

IGNORE_INDEX = -100
GROUPINGS = ("length", "packing", "none")
MEGABATCH_FACTOR = 50


@dataclass(frozen=True)
class Encoded:
    """One tokenised training example: ``labels`` is ``-100`` on the prompt tokens."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class EncodeStats:
    n_input: int = 0
    n_kept: int = 0
    n_dropped_long_prompt: int = 0  # prompt alone fills max_seq_len: no completion token left to learn
    n_truncated: int = 0  # completion cut at max_seq_len


def encode_example(tokenizer, prompt: str, completion: str, max_seq_len: int) -> Encoded | None:
    """Render, tokenise and mask one (user turn, assistant text) pair; ``None`` if the prompt alone is too long.

    The prompt tokens are exactly the tokens inference feeds the model (``render_chat(..., assistant=None)``).
    """
    prompt_text, completion_text = render_chat(tokenizer, prompt, completion)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    if len(prompt_ids) >= max_seq_len:
        return None
    full_ids = tokenizer(prompt_text + completion_text, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        # A merge across the prompt/completion boundary: keep the inference-time prompt tokens.
        full_ids = prompt_ids + tokenizer(completion_text, add_special_tokens=False)["input_ids"]
    full_ids = full_ids[:max_seq_len]
    labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids) :]
    return Encoded(input_ids=full_ids, labels=labels)


def encode_examples(tokenizer, examples: Sequence[dict], max_seq_len: int) -> tuple[list[Encoded], EncodeStats]:
    """Encode ``{"prompt", "completion"}`` dicts, dropping those whose prompt alone reaches ``max_seq_len``."""
    stats = EncodeStats(n_input=len(examples))
    encoded: list[Encoded] = []
    for example in examples:
        item = encode_example(tokenizer, example["prompt"], example["completion"], max_seq_len)
        if item is None:
            stats.n_dropped_long_prompt += 1
            continue
        if len(item) == max_seq_len:
            stats.n_truncated += 1
        encoded.append(item)
    stats.n_kept = len(encoded)
    return encoded, stats


def shuffled_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """Indices ``0..n-1`` shuffled with ``seed`` and cut into batches (the last one may be short)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, megabatch_factor: int = MEGABATCH_FACTOR
) -> list[list[int]]:
    """Batches of similar lengths: sort within shuffled megabatches of ``megabatch_factor * batch_size``."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = max(1, megabatch_factor * batch_size)
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def pack_examples(lengths: Sequence[int], max_len: int, seed: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing of example indices into rows of at most ``max_len`` tokens.

    Ties between equal lengths are broken by a ``seed``-shuffled order; the rows come back shuffled.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order.sort(key=lambda i: -lengths[i])
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (remaining capacity, row index)
    for i in order:
        need = lengths[i]
        if need > max_len:
            raise ValueError(f"example {i} has {need} tokens, more than the packing length {max_len}")
        pos = bisect.bisect_left(free, (need, -1))
        if pos < len(free):
            remaining, row = free.pop(pos)
            rows[row].append(i)
        else:
            remaining, row = max_len, len(rows)
            rows.append([i])
        if remaining - need > 0:
            bisect.insort(free, (remaining - need, row))
    rng.shuffle(rows)
    return rows


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def collate_padded(items: Sequence[Encoded], pad_id: int) -> dict:
    """Right-pad to the longest item. No attention mask is needed (see the module docstring)."""
    return {
        "input_ids": _pad([it.input_ids for it in items], pad_id),
        "labels": _pad([it.labels for it in items], IGNORE_INDEX),
        "n_tokens": sum(len(it) for it in items),
    }


def collate_packed(rows: Sequence[Sequence[Encoded]], pad_id: int) -> dict:
    """Concatenate each row's examples; ``position_ids`` restart at 0 for each example (and for the padding)."""
    ids, labels, positions = [], [], []
    for row in rows:
        ids.append([t for it in row for t in it.input_ids])
        labels.append([t for it in row for t in it.labels])
        positions.append([p for it in row for p in range(len(it))])
    width = max(len(r) for r in ids)
    for p in positions:
        p.extend(range(width - len(p)))  # padding forms its own segment
    return {
        "input_ids": _pad(ids, pad_id),
        "labels": _pad(labels, IGNORE_INDEX),
        "position_ids": torch.tensor(positions, dtype=torch.long),
        "n_tokens": sum(len(r) for r in ids),
    }


class SFTDataset(Dataset):
    """Items are single :class:`Encoded` examples, or lists of them (packed rows)."""

    def __init__(self, items: Sequence[Encoded] | Sequence[list[Encoded]]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class SFTBatchSampler(Sampler[list[int]]):
    """An endless stream of micro-batches whose i-th element depends only on (seed, i).

    Epoch ``e`` is the batch list built from ``seed + e``; the stream walks epoch after epoch, and training stops
    at ``max_steps``. ``start`` skips the micro-batches a resumed run already consumed, so a run killed and
    resumed from a checkpoint sees exactly the batches of an uninterrupted run (Lightning itself restarts a
    plain DataLoader from its first batch). All ranks build the same global stream and rank ``r`` of ``world``
    takes its micro-batches ``r, r + world, r + 2 world, ...`` across epoch boundaries, nothing dropped, so no
    distributed sampler is needed (train.py sets ``use_distributed_sampler=False``): with accumulation
    ``batch_size / (micro_batch_size x world)``, optimizer step ``k`` trains on the same micro-batches on
    ``world`` ranks as on one device. ``start`` counts this rank's micro-batches.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, group_by_length: bool, start: int = 0):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.start = start

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        seed = self.seed + epoch
        if self.group_by_length:
            batches = length_grouped_batches(self.lengths, self.batch_size, seed)
        else:
            batches = shuffled_batches(len(self.lengths), self.batch_size, seed)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = _rank_and_world()
        per_epoch = len(self.epoch_batches(0))  # the same in every epoch
        epoch, position = divmod(self.start * world + rank, per_epoch)
        batches = self.epoch_batches(epoch)
        while True:
            yield batches[position]
            position += world
            while position >= per_epoch:
                epoch, position = epoch + 1, position - per_epoch
                batches = self.epoch_batches(epoch)


def build_dataloader(
    encoded: Sequence[Encoded],
    grouping: str,
    micro_batch_size: int,
    max_seq_len: int,
    pad_id: int,
    seed: int,
    start: int = 0,
) -> DataLoader:
    """The training DataLoader for one of :data:`GROUPINGS` (tokenised data lives in memory; no workers).

    ``start``: micro-batches to skip (those a resumed run already trained on).
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"unknown grouping {grouping!r}; expected one of {GROUPINGS}")
    if grouping == "packing":
        rows = pack_examples([len(e) for e in encoded], max_seq_len, seed)
        dataset = SFTDataset([[encoded[i] for i in row] for row in rows])
        lengths = [sum(len(e) for e in row) for row in dataset.items]
        sampler = SFTBatchSampler(lengths, micro_batch_size, seed, group_by_length=False, start=start)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=partial(collate_packed, pad_id=pad_id))
    dataset = SFTDataset(encoded)
    sampler = SFTBatchSampler([len(e) for e in encoded], micro_batch_size, seed, grouping == "length", start=start)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=partial(collate_padded, pad_id=pad_id))
