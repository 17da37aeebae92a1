"""How large the hf backend's batches may be on a GPU: rows and tokens sized from the memory that is free.

On CPU the backend takes ``generation.batch_size`` and ``generation.max_batch_tokens`` (tuned for the CPU's caches).
On CUDA both come from :func:`batch_limits`, a pure function of (free bytes, the model's shape, dtype, the call's
lengths), called at the start of each ``generate`` / ``next_token_logprobs`` with the memory free at that moment
(weights and the shared prefix's KV already resident). What a batch holds, per the backend's code:

- the KV buffer: ``2 x layers x kv_heads x head_dim`` values per position, for rows x (longest prompt + new tokens)
  positions (:class:`bft.generation.kv_cache.BufferCache`), plus one layer's copy while it grows, drops finished
  rows or joins prefill chunks (done layer by layer);
- one prefill forward's activations inside a layer (residual, norm, q/k/v, attention and MLP outputs, the MLP's
  gate/up/product), for at most ``prefill_tokens`` tokens, plus the attention mask over the row's positions, which
  SDPA's memory-efficient kernel may expand over the heads (and pad) in the model's dtype;
- per row, the last position's logits and what sampling makes of them (float32 copy, softmax, sort, cumsum).

Only a fraction (``HEADROOM``) of the free memory, less ``RESERVE_BYTES`` (cuBLAS workspaces, allocator
fragmentation), is planned for. A row that does not fit on its own fails in one line before any work.
"""

from __future__ import annotations

from dataclasses import dataclass

from bft.errors import BftError

HEADROOM = 0.85  # share of the free memory the plan may fill
RESERVE_BYTES = 1 << 30  # kept free for cuBLAS/SDPA workspaces and allocator fragmentation
PREFILL_TOKENS_MAX = 16384  # prompt tokens per prefill forward: enough to saturate a GPU's matrix units
LOGIT_BYTES_PER_ENTRY = 32  # per row and vocabulary entry: logits, float32 copy, softmax, sorted values + int64 ids, cumsum
MASK_BYTES_PER_KEY = 2  # per prefill token and key position: the boolean mask (and its inverse), besides the copies
# the memory-efficient SDPA kernel may make: the mask expanded over heads and padded, in the model's dtype


class GpuMemoryError(BftError, MemoryError):
    """A single row does not fit in the GPU memory that is free."""


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """The shape of a transformers config (its text config for multimodal models)."""
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        heads = text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        return cls(
            layers=text.num_hidden_layers,
            hidden=text.hidden_size,
            intermediate=getattr(text, "intermediate_size", None) or 4 * text.hidden_size,
            heads=heads,
            kv_heads=getattr(text, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            vocab=text.vocab_size,
        )

    def kv_bytes_per_position(self, dtype_bytes: int) -> int:
        """Keys and values of one position in every layer."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def activation_bytes_per_token(self, dtype_bytes: int) -> int:
        """What one prefill token holds at once inside a layer (inference: earlier layers' activations are freed)."""
        attention = 2 * self.heads * self.head_dim + 2 * self.kv_heads * self.head_dim  # q, attention output; k, v
        return (4 * self.hidden + attention + 3 * self.intermediate) * dtype_bytes

    def prefill_bytes_per_token(self, dtype_bytes: int, keys: int) -> int:
        """A prefill token's activations and its row of the attention mask over ``keys`` positions (bool, and
        an additive copy per head in the model's dtype)."""
        return self.activation_bytes_per_token(dtype_bytes) + keys * (MASK_BYTES_PER_KEY + dtype_bytes * self.heads)


@dataclass(frozen=True)
class BatchLimits:
    rows: int  # rows per batch (the backend's batch_size)
    tokens: int  # rows x (longest prompt + new tokens) per batch (the backend's max_batch_tokens)
    prefill_tokens: int  # padded prompt tokens per prefill forward


def batch_limits(
    free_bytes: int,
    shape: ModelShape,
    dtype_bytes: int,
    prompt_lengths: list[int],
    new_tokens: int,
    context: int | None = None,
) -> BatchLimits:
    """Rows and tokens per batch, and tokens per prefill forward, that fit in ``free_bytes`` (see the module
    docstring); ``prompt_lengths``: the call's prompts in tokens, ``new_tokens``: generated per row (0 to score),
    ``context``: the model's context, which caps a row's positions."""
    if not prompt_lengths:
        return BatchLimits(1, 1, 1)
    widths = [p + new_tokens if context is None else min(p + new_tokens, context) for p in prompt_lengths]
    widest, narrowest, longest_prompt = max(widths), max(1, min(widths)), max(prompt_lengths)
    usable = int(free_bytes * HEADROOM) - RESERVE_BYTES
    # a layer's extra copy while the buffer grows, drops rows or joins chunks: 1/layers of the whole buffer
    kv = shape.kv_bytes_per_position(dtype_bytes) * (shape.layers + 1) / shape.layers
    per_prefill_token = shape.prefill_bytes_per_token(dtype_bytes, widest)
    per_row = shape.vocab * LOGIT_BYTES_PER_ENTRY
    # prefill runs at least one whole row per forward (bft.generation.batching.prefill_chunks)
    prefill = max(longest_prompt, min(PREFILL_TOKENS_MAX, sum(prompt_lengths)))
    one_row = widest * kv + longest_prompt * per_prefill_token + per_row
    if one_row > usable:
        raise GpuMemoryError(
            f"one row of {longest_prompt} prompt + {new_tokens} new tokens needs {one_row / 2**30:.2f} GiB of GPU "
            f"memory and {max(usable, 0) / 2**30:.2f} GiB can be planned for ({free_bytes / 2**30:.2f} GiB free): "
            "shorten the documents (corpus.max_chars, corpus.max_tokens) or the generation, or use a larger GPU"
        )
    room = usable - prefill * per_prefill_token
    if room < widest * kv + per_row:  # the prefill allowance would crowd out the widest row: smaller forwards
        prefill = longest_prompt
        room = usable - prefill * per_prefill_token
    # The narrowest rows carry the most per-row overhead per token: plan for as many of them as fit. A batch of r
    # rows of width w <= tokens / r then costs r (w kv + per_row) <= room. A row wider than ``tokens`` runs in a
    # batch of its own (length_batches), which fits since one_row did.
    fitting_rows = room / (narrowest * kv + per_row)
    return BatchLimits(rows=max(1, int(fitting_rows)), tokens=max(1, int(fitting_rows * narrowest)), prefill_tokens=prefill)


def free_cuda_bytes(device) -> int:
    """Memory a new tensor on ``device`` can take: free on the device plus what PyTorch's caching allocator holds
    unused (``mem_get_info`` counts the allocator's cached blocks as taken)."""
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
