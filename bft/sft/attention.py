"""Training attention that skips the masked-out upper triangle: ``trainer.attention: bft_causal_blocks``.

Eager attention computes every ``T x T`` score and then masks the upper half away. Here the queries are cut into
:data:`QUERY_BLOCKS` blocks and block ``i`` is multiplied only with the keys up to its own last position, so the
scores and ``probs @ values`` products cost ``(n + 1) / (2n)`` of eager's (62.5% at 4 blocks), forward and
backward. The mask is eager's own (causal, block-diagonal for packed rows, padding), sliced to each block, so
the result equals eager attention up to float rounding (tested with packing and padding). The block count is
fixed rather than the block size, so a compiled layer (``trainer.compile``) needs no new graph per sequence length.

Measured inside compiled LoRA steps on the 2-core workplace CPU (SmolLM2-135M, 2x512 tokens): see
``bft-bench``'s SFT row and the README's speed table.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.llama.modeling_llama import eager_attention_forward, repeat_kv

ATTENTION_NAME = "bft_causal_blocks"
QUERY_BLOCKS = 4


def causal_blocks_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """``query`` (B, H, T, D), ``key``/``value`` (B, KV, T, D), additive ``attention_mask`` (B, 1, T, T);
    returns (B, T, H, D) as transformers' attention functions do."""
    length = query.shape[2]
    if attention_mask is None or key.shape[2] != length or dropout > 0 or length < 2 * QUERY_BLOCKS:
        return eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    block = (length + QUERY_BLOCKS - 1) // QUERY_BLOCKS
    outputs = []
    for i in range(QUERY_BLOCKS):
        start, end = i * block, min(length, (i + 1) * block)
        scores = torch.matmul(query[:, :, start:end], key[:, :, :end].transpose(2, 3)) * scaling
        scores = scores + attention_mask[:, :, start:end, :end]
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        outputs.append(torch.matmul(probs, value[:, :, :end]))
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION_NAME, causal_blocks_attention)
AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)
