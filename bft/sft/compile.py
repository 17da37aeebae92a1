"""Regional ``torch.compile`` for training (``trainer.compile``): each decoder layer, and the output head + loss.

Compiling the whole model makes one huge graph (slow to compile, recompiled for every new shape); compiling the
repeated decoder layer once gives the same fusions for a fraction of the compile time (PyTorch's "regional
compilation" recipe), since every layer runs the same code (``inline_inbuilt_nn_modules``: a layer's weights are
graph inputs, so the 30 layers share one compiled graph). Inductor fuses what eager runs as dozens of small
memory-bound ops per layer: RMSNorm's float32 round trip, rotary embeddings, the causal mask and softmax, SiLU,
LoRA's scaling and the autocast casts. The head compiles the vocabulary projection, the float32 upcast and the
cross-entropy into one graph, so the float32 copy of the ``tokens x vocab`` logits is never written out
(forward) and their gradient is not built in separate passes (backward).

Measured on the 2-core workplace CPU (SmolLM2-135M, LoRA r16, bf16-mixed, 2x512 tokens): eager 620-720 tokens/s,
layers compiled 770-820, layers and head 850-970 (``bft-bench``: 54% of the bf16 roofline). Compilation takes
~65 s on a cold inductor cache and ~5 s on a warm one, hence ``trainer.compile_min_tokens``. Shapes: the first
call compiles for its sequence length, a second length recompiles once with dynamic shapes (compiling dynamic
from the start took as long). With LoRA the embedding output does not need grad but every later layer's input
does, which would give layer 0 a graph of its own: :class:`bft.sft.module.SFTModule` makes the embedding output
require grad (``enable_input_require_grads``) so that all layers share one.

On CPU, inductor generates C++ and needs a compiler: without one, :func:`can_compile` says why and training stays
eager (a warning, not a failure).
"""

from __future__ import annotations

import functools
import os
import shutil

import torch
import torch.nn.functional as F


def can_compile(accelerator: str) -> str | None:
    """``None`` if ``torch.compile`` can run here, else the reason it cannot (one line)."""
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu:
        compiler = os.environ.get("CXX", "c++")
        if shutil.which(compiler) is None and shutil.which("g++") is None:
            return f"no C++ compiler ({compiler!r} or 'g++') on PATH for inductor's CPU code"
    return None


def decoder_layers(causal_lm: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated decoder blocks of a transformers causal LM (``model.layers``), or ``[]``."""
    layers = getattr(getattr(causal_lm, "model", None), "layers", None)
    return list(layers) if isinstance(layers, torch.nn.ModuleList) else []


def compile_decoder_layers(causal_lm: torch.nn.Module) -> int:
    """Compile each decoder layer in place (state-dict keys unchanged), or the whole model if none is found;
    returns how many modules were compiled."""
    layers = decoder_layers(causal_lm) or [causal_lm]
    for layer in layers:
        layer.compile()
    return len(layers)


def head_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` (no bias, float32 logits) against ``targets``."""
    return F.cross_entropy(F.linear(hidden, weight).float(), targets)


@functools.cache
def _compiled_head_loss():
    return torch.compile(head_loss, dynamic=True)


def compiled_head_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:func:`head_loss` through ``torch.compile``, built on the first call: building it imports inductor (seconds),
    which a process that never compiles (every ``trainer.compile=false`` or short training) does not pay."""
    return _compiled_head_loss()(hidden, weight, targets)
