"""Fused element-wise kernels for CPU prefill of Llama-architecture models: RMSNorm, rotary embedding, SiLU gate.

Once attention and the linear layers are fast (:mod:`bft.generation.cpu_attention`, :mod:`bft.generation.cpu_linear`),
a prefill layer of SmolLM2-135M on the 2-core workplace CPU spends most of its time in eager element-wise ops: for
5 rows x 410 tokens, each RMSNorm took ~4 ms (float32 upcast, pow, mean, rsqrt, two multiplies, each a pass over
memory), the rotary embedding ~4 ms and ``silu(gate) * up`` 1.5-5 ms, against 6.4 ms for all seven linear layers.
The same functions compiled by inductor (one loop each, ``torch.compile(dynamic=True)``: one graph for every batch
and length) took 0.33, 0.62 and 1.2 ms. Compiling whole decoder layers was tried and rejected: the custom
attention breaks the graph, and with the packed linear layers the warm-up took minutes for no gain.

Small calls (decode steps: one token per row) stay eager, where dynamo's guards would cost more than the ops:
only tensors of at least ``MIN_FUSED_ELEMENTS`` go through the compiled kernels. The first large call compiles
(about 10 s on a cold inductor cache, which persists on disk). Results equal the eager modules' within bfloat16
rounding (inductor keeps the intermediates of a fused loop in float32).

Only models the generation backend owns are changed (``HFBackend.from_name``), in place, and only modules whose
exact type is transformers' Llama RMSNorm / MLP / attention with a SiLU gate; anything else keeps its code.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama import modeling_llama

try:  # transformers' own SiLU module (a release may drop it): without it, nn.SiLU is the only SiLU to recognise
    from transformers.activations import SiLUActivation
except ImportError:  # pragma: no cover - depends on the installed transformers
    SiLUActivation = nn.SiLU

from bft.generation.cpu_linear import replace_modules
from bft.sft.compile import can_compile

MIN_FUSED_ELEMENTS = 1 << 18  # hidden-state elements (rows x tokens x width) from which the fused kernels run


def rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' Llama RMSNorm: float32 statistics, the product rounded to the input dtype, then the weight."""
    x = hidden.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(hidden.dtype)


def silu_gate(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def merge_attention(out_a, lse_a, out_b, lse_b) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the union of two disjoint key sets from each set's (B, H, Q, D) output and (B, H, Q)
    float32 log-sum-exp (the flash kernel's): the outputs weighted by their share of the softmax mass."""
    share_a = torch.sigmoid(lse_a - lse_b).unsqueeze(-1)
    merged = torch.lerp(out_b.float(), out_a.float(), share_a).to(out_a.dtype)
    return merged, torch.logaddexp(lse_a, lse_b)


def rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)


@functools.cache
def _compiled(fn):
    return torch.compile(fn, dynamic=True)


def run_fused(fn, big: bool, *args):
    """``fn(*args)``, through its compiled kernel when the tensors are ``big`` and inductor can run here."""
    return _compiled(fn)(*args) if big and _can_compile() else fn(*args)


@functools.cache
def _can_compile() -> bool:
    return can_compile("cpu") is None


class FusedRMSNorm(nn.Module):
    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.weight, self.eps = norm.weight, norm.variance_epsilon

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return run_fused(rms_norm, hidden.numel() >= MIN_FUSED_ELEMENTS, hidden, self.weight, self.eps)


class FusedMLP(nn.Module):
    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(run_fused(silu_gate, x.numel() >= MIN_FUSED_ELEMENTS, gate, up))


class FusedAttention(nn.Module):
    """transformers' ``LlamaAttention.forward`` with the rotary embedding fused; the attention function is still
    the one the model's config names (the CPU bmm/flash attention on the backend's models)."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.attn = attn  # its projections and settings, and what the attention function reads from the module

    def forward(self, hidden_states, position_embeddings, attention_mask=None, cache=None, **kwargs):
        attn = self.attn
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, attn.head_dim)
        q = attn.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        k = attn.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        v = attn.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        q, k = run_fused(rotary, hidden_states.numel() >= MIN_FUSED_ELEMENTS, q, k, *position_embeddings)
        if cache is not None:
            k, v = cache.update(k, v, attn.layer_idx, kwargs=kwargs)
        attention = modeling_llama.ALL_ATTENTION_FUNCTIONS.get_interface(
            attn.config._attn_implementation, modeling_llama.eager_attention_forward
        )
        out, weights = attention(attn, q, k, v, attention_mask, dropout=0.0, scaling=attn.scaling, **kwargs)
        return attn.o_proj(out.reshape(*input_shape, -1).contiguous()), weights


def _silu_gated(mlp: nn.Module) -> bool:
    return type(mlp) is modeling_llama.LlamaMLP and isinstance(mlp.act_fn, (nn.SiLU, SiLUActivation))


def _same_attention_signature() -> bool:
    """FusedAttention copies the installed transformers' ``LlamaAttention.forward``, whose layers pass the KV cache
    as ``cache``; a version that still passes ``past_key_values`` keeps its own attention module."""
    return "cache" in inspect.signature(modeling_llama.LlamaAttention.forward).parameters


def fuse_elementwise(model: nn.Module) -> int:
    """Swap the Llama RMSNorm, MLP and attention modules of a CPU inference model for their fused versions, in
    place; returns how many were swapped (0 off CPU, without a C++ compiler, or for other architectures)."""
    param = next(model.parameters())
    if param.device.type != "cpu" or not _can_compile():
        return 0
    swaps = {modeling_llama.LlamaRMSNorm: FusedRMSNorm, modeling_llama.LlamaMLP: FusedMLP}
    if _same_attention_signature():
        swaps[modeling_llama.LlamaAttention] = FusedAttention
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) in swaps and (type(module) is not modeling_llama.LlamaMLP or _silu_gated(module))
    ]
    return replace_modules(model, targets, lambda module: swaps[type(module)](module))
