"""CPU attention for the generation backend, registered as a transformers attention implementation.

With a layout (what the hf backend passes): PyTorch's CPU flash kernel
(``aten._scaled_dot_product_flash_attention_for_cpu``, called directly: grouped key/value heads without
``repeat_kv`` copies, and it returns the log-sum-exp) over exactly the keys each query needs. The kernel is private
to PyTorch: where a build lacks it, the same function runs on public ops (:func:`_attention_with_lse`; tested equal).

- Prefill (:class:`PrefillLayout`): each row's own tokens with the kernel's causal mask, never a score matrix; a
  shared prompt prefix (copied into the rows, or kept apart once) in a second call, merged by log-sum-exp. On the
  2-core workplace CPU (bf16 peak ~2 TFLOP/s) one 404-token row took 1.1 ms per layer this way and 5.7 ms as
  ``bmm`` + masked float32 softmax over the full square; real-document prefill went from ~940 to ~2,100 tok/s.
- Decode (:class:`DecodeLayout`): a step reads the whole KV cache of every row, so it is bound by memory; runs of
  16 length-sorted rows each read only from their longest row's start to the filled end (no left padding of the
  longest row, no unfilled tail of the buffer), with an additive mask for the rows of the run that start later.
  In bfloat16 these one-query calls are two ``bmm`` instead of the flash kernel (:func:`_one_query`).

Without a layout (any other caller): the same softmax(q k^T) v as two ``bmm`` over the whole (contiguous) KV
buffer, with the mask applied to float32 scores: one row at a time in prefill (and, for very long prompts, one block
of queries at a time) so that the score matrix stays in cache. Masked scores are set to the dtype's lowest finite
value rather than ``-inf``, so a query that sees nothing (a left-padding position) gets a finite average instead of
NaN, which would otherwise reach other rows through ``0 * NaN`` in the value product. Outputs are compared with
SDPA's, and greedy generations with the plain path's, in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from bft.generation.cpu_fused import MIN_FUSED_ELEMENTS, merge_attention, run_fused

ATTENTION_NAME = "bft_decode_bmm"
SCORE_BLOCK_ELEMENTS = 1 << 22  # float32 scores per bmm block in prefill (16 MiB): fits the last-level cache


def _masked_scores(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Apply a bool (True = attend) or additive float mask that broadcasts against ``scores`` (float32)."""
    if mask.dtype == torch.bool:
        return scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    return scores.add_(mask)


def _merge_prefix(scores: torch.Tensor, prefix_scores: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax over [shared prefix keys | own keys] (last dim); returns the two parts of the probabilities."""
    if prefix_scores is None:
        return torch.softmax(scores, dim=-1), None
    n = prefix_scores.shape[-1]
    probs = torch.softmax(torch.cat([prefix_scores, scores], dim=-1), dim=-1)
    return probs[..., n:], probs[..., :n]


def _decode(query, key, value, attention_mask, scale, prefix) -> torch.Tensor:
    batch, heads, _, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    groups = heads // kv_heads  # query head h reads key/value head h // groups (transformers' repeat_kv layout)
    q = query.reshape(batch * kv_heads, groups, dim)
    scores = torch.bmm(q, key.reshape(batch * kv_heads, length, dim).transpose(1, 2)).float().mul_(scale)
    scores = scores.view(batch, kv_heads, groups, length)
    if attention_mask is not None:
        scores = _masked_scores(scores, attention_mask[:, :, -1:, :].reshape(attention_mask.shape[0], 1, 1, length))
    prefix_scores = None
    if prefix is not None:  # every row's queries against the one shared prefix: a single bmm per key/value head
        q_by_head = q.view(batch, kv_heads, groups, dim).transpose(0, 1).reshape(kv_heads, batch * groups, dim)
        prefix_scores = torch.bmm(q_by_head, prefix[0][0].transpose(1, 2)).float().mul_(scale)
        prefix_scores = prefix_scores.view(kv_heads, batch, groups, -1).transpose(0, 1)
    probs, prefix_probs = _merge_prefix(scores, prefix_scores)
    probs = probs.to(value.dtype).reshape(batch * kv_heads, groups, length)
    out = torch.bmm(probs, value.reshape(batch * kv_heads, length, dim)).view(batch, kv_heads, groups, dim)
    if prefix_probs is not None:
        by_head = prefix_probs.to(value.dtype).transpose(0, 1).reshape(kv_heads, batch * groups, -1)
        out += torch.bmm(by_head, prefix[1][0]).view(kv_heads, batch, groups, dim).transpose(0, 1)
    return out.view(batch, 1, heads, dim)


def _visible_keys(mask: torch.Tensor) -> int:
    """One past the last key position that any query may attend to (the rest is the buffer's unfilled tail)."""
    seen = mask[:, 0].any(dim=1) if mask.dtype == torch.bool else (mask[:, 0] > torch.finfo(mask.dtype).min).any(dim=1)
    cols = seen.any(dim=0).nonzero()
    return int(cols[-1]) + 1 if len(cols) else mask.shape[-1]


def _prefill(query, key, value, attention_mask, scale, prefix) -> torch.Tensor:
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    length = _visible_keys(attention_mask)
    seen = length + (prefix[0].shape[2] if prefix is not None else 0)
    block = max(1, SCORE_BLOCK_ELEMENTS // (heads * seen))
    out = query.new_empty(batch, q_len, heads, dim)
    for row in range(batch):
        keys_t = key[row, :, :length].transpose(1, 2)  # (kv_heads, dim, length)
        values = value[row, :, :length]
        for start in range(0, q_len, block):
            end = min(q_len, start + block)
            n = end - start
            q = query[row, :, start:end].reshape(kv_heads, groups * n, dim)
            scores = torch.bmm(q, keys_t).float().mul_(scale).view(kv_heads, groups, n, length)
            scores = _masked_scores(scores, attention_mask[row, 0, start:end, :length])
            prefix_scores = None
            if prefix is not None:
                prefix_scores = torch.bmm(q, prefix[0][0].transpose(1, 2)).float().mul_(scale)
                prefix_scores = prefix_scores.view(kv_heads, groups, n, -1)
            probs, prefix_probs = _merge_prefix(scores, prefix_scores)
            o = torch.bmm(probs.to(values.dtype).reshape(kv_heads, groups * n, length), values)
            if prefix_probs is not None:
                o += torch.bmm(prefix_probs.to(values.dtype).reshape(kv_heads, groups * n, -1), prefix[1][0])
            out[row, start:end] = o.view(heads, n, dim).transpose(0, 1)
    return out


@dataclass(frozen=True)
class PrefillLayout:
    """Where each row's tokens sit in the KV buffer during a prefill (a model-call keyword, ``prefill_layout``).

    The buffer of every row holds ``prefix_len`` positions that all its queries see (a copied shared prefix), then
    left padding, then the row's own ``row_lengths[r]`` tokens, which end at ``end`` (the queries are the last
    positions up to ``end``; what follows is the unfilled tail). With it, attention runs PyTorch's CPU flash kernel
    on each row's own tokens with a causal mask it never materialises, instead of a score matrix over every key.
    """

    prefix_len: int
    row_lengths: tuple[int, ...]
    end: int


@dataclass(frozen=True)
class DecodeLayout:
    """Which key positions each row reads in a decode step (a model-call keyword, ``decode_layout``).

    Rows come sorted by their own length, longest first (as the backend batches them), so their own tokens start
    later and later in the buffer. ``groups`` splits them into runs of consecutive rows; each run reads keys from its
    first row's start to ``end`` (the filled part: no left padding of its longest row, no unfilled tail), with an
    additive ``mask`` for the rows of the run that start later. ``prefix_len`` positions at the buffer's start (a
    copied shared prefix) are read in the same range when the run's padding after them is short (at most
    ``MAX_GAP``, masked), else apart and merged by log-sum-exp (a run's ``apart`` is then ``prefix_len``).
    """

    MAX_GAP = 64

    prefix_len: int
    end: int
    # (first row, last row + 1, first key, additive mask or None, copied-prefix positions read apart)
    groups: tuple[tuple[int, int, int, torch.Tensor | None, int], ...]

    @classmethod
    def build(cls, starts: list[int], prefix_len: int, end: int, dtype: torch.dtype, rows_per_group: int = 16):
        groups = []
        for first in range(0, len(starts), rows_per_group):
            rows = starts[first : first + rows_per_group]
            key_start = min(rows)
            apart = prefix_len
            if prefix_len and key_start - prefix_len <= cls.MAX_GAP:  # read [prefix][gap][own] as one range
                key_start, apart = 0, 0
            mask = None
            if max(rows) > key_start and (key_start or any(start > prefix_len for start in rows)):
                mask = torch.zeros(len(rows), 1, 1, end - key_start, dtype=dtype)
                visible = prefix_len if key_start == 0 else key_start  # the prefix, when read here, is visible
                for i, start in enumerate(rows):
                    mask[i, ..., visible - key_start : start - key_start] = torch.finfo(dtype).min
            groups.append((first, first + len(rows), key_start, mask, apart))
        return cls(prefix_len, end, tuple(groups))

    def keys_read(self) -> int:
        """Key positions read in all rows (the backend's ``decode_kv_read``)."""
        return sum((last - first) * (self.end - start + apart) for first, last, start, _, apart in self.groups)


def _has_flash_kernel() -> bool:
    """Whether this PyTorch build has the private CPU flash kernel (an ``aten`` op that a release may rename)."""
    return hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")


FLASH_KERNEL = _has_flash_kernel()  # else :func:`_attention_with_lse`, public ops only, gives the same results


def _flash(query, key, value, causal: bool, scale: float, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, Q, D) output and (B, H, Q) float32 log-sum-exp of the CPU flash kernel (grouped heads allowed;
    ``mask``: additive, in the query's dtype); :func:`_attention_with_lse` where the kernel is missing."""
    if not FLASH_KERNEL:
        return _attention_with_lse(query, key, value, causal, scale, mask)
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, causal, attn_mask=mask, scale=scale)


def _attention_with_lse(query, key, value, causal: bool, scale: float, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`_flash` returns, from public ops: float32 scores, the log-sum-exp, then the weighted values.

    ``torch.nn.functional.scaled_dot_product_attention`` gives the output but not the log-sum-exp that merging
    attention over disjoint key sets needs, so the scores are computed here (one (Q, L) matrix per head: fine for
    the decode steps and the prefill chunks of at most ``PREFILL_CHUNK_TOKENS`` the backend sends). ``causal``
    masks key j > query i (top-left aligned, as the kernel and SDPA do; the backend passes square blocks)."""
    batch, heads, q_len, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    groups = heads // kv_heads  # query head h reads key/value head h // groups
    q = query.reshape(batch, kv_heads, groups * q_len, dim)
    scores = torch.matmul(q, key.transpose(-1, -2)).float().mul_(scale).view(batch, heads, q_len, length)
    if causal:
        visible = torch.ones(q_len, length, dtype=torch.bool, device=query.device).tril()
        scores.masked_fill_(~visible, torch.finfo(scores.dtype).min)
    if mask is not None:
        scores.add_(mask.float())
    lse = torch.logsumexp(scores, dim=-1)
    probs = scores.sub_(lse.unsqueeze(-1)).exp_().to(value.dtype).view(batch, kv_heads, groups * q_len, length)
    out = torch.matmul(probs, value).view(batch, heads, q_len, dim)
    return out, lse


def _one_query(query, key, value, scale: float, mask=None, with_lse: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What :func:`_flash` returns, for one query per row (a decode step). In bfloat16 the CPU flash kernel is slow
    there (on an AVX-512-bf16 CPU, 30 layers x 64 rows x 470 keys: 713 ms a decode step; 5.1 ms per run of 16 rows
    in cache, 0.8 ms in float32): two ``bmm`` in the query's dtype with a float32 softmax take 95-130 ms. float32
    keeps the kernel (0.8 ms vs 1.0 ms as ``bmm`` per run).
    Without ``with_lse`` (nothing to merge with) the log-sum-exp is not computed and None is returned for it."""
    if query.dtype == torch.float32:
        return _flash(query, key, value, False, scale, mask)
    rows, heads, _, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    groups = heads // kv_heads  # query head h reads key/value head h // groups
    q = query.reshape(rows * kv_heads, groups, dim)
    # dense copies of the buffer's slices first: bf16 bmm straight on the strided slices was slower than the copy
    # plus a dense bmm (30 layers x 64 rows x 470 keys: 138 ms a step this way, 161-213 ms strided, 713 ms flash)
    key, value = key.contiguous(), value.contiguous()
    scores = torch.bmm(q, key.view(rows * kv_heads, length, dim).transpose(1, 2)).float().mul_(scale)
    scores = scores.view(rows, heads, length)
    if mask is not None:  # additive, (rows, 1, 1, length)
        scores.add_(mask.view(rows, 1, length))
    lse = torch.logsumexp(scores, dim=-1, keepdim=True) if with_lse else None
    probs = scores.sub_(lse).exp_() if with_lse else torch.softmax(scores, dim=-1)
    probs = probs.to(value.dtype).view(rows * kv_heads, groups, length)
    out = torch.bmm(probs, value.view(rows * kv_heads, length, dim))
    return out.view(rows, heads, 1, dim), (lse.reshape(rows, heads, 1) if with_lse else None)


def _merge_lse(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Attention over the union of disjoint key sets, from each set's output and log-sum-exp."""
    out, lse = parts[0]
    for other, other_lse in parts[1:]:
        big = out.numel() >= MIN_FUSED_ELEMENTS
        out, lse = run_fused(merge_attention, big, out, lse, other, other_lse)
    return out


def _prefill_flash(query, key, value, scale, prefix, layout: PrefillLayout) -> torch.Tensor:
    """Prefill attention from the explicit :class:`PrefillLayout`: per row, the flash kernel over its own tokens
    (causal), merged by log-sum-exp with its copied prefix (``layout.prefix_len``) and the shared prefix kept
    apart (``prefix``, read by all rows' queries in one call). Left-padding queries get zeros."""
    batch, heads, q_len, dim = query.shape
    out = query.new_zeros(batch, q_len, heads, dim)
    shared = None
    if prefix is not None:  # every row's queries at once against the one (1, kv_heads, P, D) prefix
        flat = query.transpose(0, 1).reshape(1, heads, batch * q_len, dim)
        o, lse = _flash(flat, prefix[0], prefix[1], False, scale)
        shared = (o.view(heads, batch, q_len, dim).transpose(0, 1), lse.view(heads, batch, q_len).transpose(0, 1))
    end, copied = layout.end, layout.prefix_len
    for row, n in enumerate(layout.row_lengths):
        q = query[row : row + 1, :, q_len - n :]
        parts = [_flash(q, key[row : row + 1, :, end - n : end], value[row : row + 1, :, end - n : end], True, scale)]
        if copied:
            parts.append(_flash(q, key[row : row + 1, :, :copied], value[row : row + 1, :, :copied], False, scale))
        if shared is not None:
            parts.append((shared[0][row : row + 1, :, q_len - n :], shared[1][row : row + 1, :, q_len - n :]))
        out[row, q_len - n :] = _merge_lse(parts)[0].transpose(0, 1)
    return out


def _decode_flash(query, key, value, scale, prefix, layout: DecodeLayout) -> torch.Tensor:
    """One-token queries through the flash kernel, each run of rows over its own key range (see
    :class:`DecodeLayout`), merged with the copied prefix and the shared prefix kept apart."""
    batch, heads, _, dim = query.shape
    out = torch.empty(batch, 1, heads, dim, dtype=query.dtype)
    shared = None
    if prefix is not None:  # all rows' queries against the one shared prefix
        o, lse = _flash(query.transpose(0, 2), prefix[0], prefix[1], False, scale)  # (1, heads, batch, dim)
        shared = (o.transpose(0, 2), lse.transpose(0, 2))  # (batch, heads, 1, dim), (batch, heads, 1)
    end = layout.end
    for first, last, start, mask, copied in layout.groups:
        q = query[first:last]
        merged = bool(copied) or shared is not None
        parts = [_one_query(q, key[first:last, :, start:end], value[first:last, :, start:end], scale, mask, merged)]
        if copied:
            parts.append(_one_query(q, key[first:last, :, :copied], value[first:last, :, :copied], scale))
        if shared is not None:
            parts.append((shared[0][first:last], shared[1][first:last]))
        out[first:last] = _merge_lse(parts).transpose(1, 2)
    return out


def decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    shared_prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    prefill_layout: PrefillLayout | None = None,
    decode_layout: DecodeLayout | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention function on CPU: (B, H, S, D) queries via bmm (no mask means causal); in training
    (dropout) or off CPU, transformers' SDPA path. Returns (B, S, H, D) as transformers' attention functions do.

    ``shared_prefix_kv`` (a model-call keyword, one (keys, values) pair of shape (1, kv_heads, P, D) per layer):
    keys and values that every row sees before its own ``key``/``value`` (the generation backend's shared prompt
    prefix, kept once instead of copied into every row). The mask covers only the rows' own positions.
    ``prefill_layout`` / ``decode_layout`` (model-call keywords): where each row's tokens are, which lets prefill
    skip the mask and decoding skip left padding and the buffer's unfilled tail.
    """
    prefix = shared_prefix_kv[module.layer_idx] if shared_prefix_kv is not None else None
    if dropout or query.device.type != "cpu":
        if prefix is not None:
            raise ValueError("shared_prefix_kv needs the CPU bmm attention path (no dropout)")
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if attention_mask is None and query.shape[2] != 1:  # transformers dropped an all-causal mask: rebuild it
        q_len, length = query.shape[2], key.shape[2]
        causal = torch.ones(q_len, length, dtype=torch.bool, device=query.device).tril(length - q_len)
        attention_mask = causal.expand(query.shape[0], 1, q_len, length)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if prefill_layout is not None and query.shape[2] > 1:
        return _prefill_flash(query, key, value, scale, prefix, prefill_layout), None
    if decode_layout is not None and query.shape[2] == 1:
        return _decode_flash(query, key, value, scale, prefix, decode_layout), None
    if query.shape[2] == 1:
        return _decode(query, key, value, attention_mask, scale, prefix), None
    return _prefill(query, key, value, attention_mask, scale, prefix), None


AttentionInterface.register(ATTENTION_NAME, decode_attention)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def use_decode_attention(model) -> bool:
    """Switch a CPU model that uses SDPA to :func:`decode_attention`; returns whether it did."""
    current = getattr(model.config, "_attn_implementation", None)
    if current == ATTENTION_NAME:
        return True
    if next(model.parameters()).device.type != "cpu" or current != "sdpa":
        return False
    model.set_attn_implementation(ATTENTION_NAME)
    return True
