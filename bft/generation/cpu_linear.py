"""Linear layers with their weights pre-packed for oneDNN, for CPU inference (bfloat16 and float32).

``F.linear`` hands oneDNN a plain row-major weight, which it re-lays out into its blocked format on every call. For
the small row counts of decoding that is a large part of the call: on the 2-core workplace machine a
576 x 1536 bfloat16 projection ran at 430 / 740 / 840 GFLOP/s for 16 / 64 / 128 rows and at 620 / 840 / 920 with
the weight packed once by ``torch.ops.mkldnn._reorder_linear_weight`` (the same packing inductor's CPU freezing
pass uses). Results equal ``F.linear``'s within bfloat16 rounding (bit-identical on SmolLM2's bias-free
projections in that measurement; tested to tolerance, and greedy generations tested equal).

float32 models (CPUs without bf16 matrix units, where ``dtype=auto`` picks float32) are packed too. On a 2-core
AVX2 machine (no AVX-512; fp32 2048^3 matmul ~100 GFLOP/s) the tied 576 x 49152 LM head of SmolLM2 took 67 ms per
decode step at 32 rows through ``F.linear`` (27 GFLOP/s; MKL handles the transposed, very wide weight poorly) and
23 ms packed (80 GFLOP/s); the 576 x 1536 projections at 32 rows 0.72 vs 0.49 ms; prefill shapes (2,048 rows) equal
or up to 15% faster. Results differ from ``F.linear`` by float32 summation order only (~1e-4 on outputs of ~10).

Only models the generation backend owns are packed (``HFBackend.from_name``): a packed model can no longer be
trained, saved or moved, so it never leaves the backend. The ``torch.ops.mkldnn`` ops are private to PyTorch: a
build without them packs nothing and runs the public ``nn.Linear`` (``F.linear``) path (:func:`has_packing_ops`).
"""

from __future__ import annotations

import torch
from torch import nn

BATCH_HINT = 128  # rows oneDNN should pick its packed layout for: the decode batches of the pipeline


class PackedLinear(nn.Module):
    """Inference-only replacement for ``nn.Linear`` holding a oneDNN-packed weight (bfloat16 or float32)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, BATCH_HINT), persistent=False)
        bias = linear.bias.detach() if linear.bias is not None else None
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).contiguous()  # no copy when already contiguous
        out = torch.ops.mkldnn._linear_pointwise(flat, self.packed_weight, self.bias, "none", [], "")
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed=oneDNN"


_PACKING_OPS = ("_reorder_linear_weight", "_linear_pointwise", "_is_mkldnn_bf16_supported")


def has_packing_ops() -> bool:
    """Whether this PyTorch build has oneDNN and the private ``torch.ops.mkldnn`` ops packing uses (a release may
    rename them). Without them nothing is packed: the layers stay ``nn.Linear`` (``F.linear``), the public path."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return all(hasattr(torch.ops.mkldnn, op) for op in _PACKING_OPS)
    except RuntimeError:  # a build without the mkldnn op namespace
        return False


def onednn_bf16() -> bool:
    """Whether oneDNN computes bfloat16 on this CPU (False where the packing ops are missing)."""
    return has_packing_ops() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def can_pack(model: nn.Module) -> bool:
    """True for a CPU model when this PyTorch build has oneDNN (mkldnn) and its packing ops: float32, or bfloat16
    where oneDNN supports it."""
    param = next(model.parameters())
    if param.device.type != "cpu" or not has_packing_ops():
        return False
    if param.dtype == torch.bfloat16:
        return onednn_bf16()
    return param.dtype == torch.float32


def replace_modules(model: nn.Module, targets: list[tuple[str, nn.Module]], make) -> int:
    """Replace each named submodule of ``model`` in place by ``make(submodule)``; returns how many were replaced."""
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(module))
    return len(targets)


def pack_linear_layers(model: nn.Module) -> int:
    """Replace every ``nn.Linear`` of ``model`` in place by a :class:`PackedLinear`; returns how many were packed."""
    if not can_pack(model):
        return 0
    targets = [(name, module) for name, module in model.named_modules() if type(module) is nn.Linear]
    packed = replace_modules(model, targets, PackedLinear)
    own_remaining_tensors(model)
    return packed


def own_remaining_tensors(model: nn.Module) -> None:
    """Copy the parameters and buffers left after packing (embeddings, norms) into memory of their own.

    transformers loads a checkpoint as views into one memory map of the safetensors file; one surviving view (the
    embedding a tied LM head shared) keeps the whole map, every original weight included, resident. Measured on
    SmolLM2-135M in float32: 1.64 GB RSS after packing without this, 1.21 GB with it (1.16 GB unpacked).
    """
    for param in model.parameters():
        param.data = param.data.clone()
    for buffer in model.buffers():
        if not buffer.is_mkldnn:
            buffer.data = buffer.data.clone()
