"""Fused element-wise kernels for CPU prefill: the same logits and greedy text as transformers' own modules."""

from __future__ import annotations

import pytest
import torch

from bft.generation import cpu_fused
from bft.generation.base import Sampling
from bft.generation.hf import HFBackend
from bft.models.registry import load_model
from bft.sft.compile import can_compile

pytestmark = [
    pytest.mark.slow,  # compiles inductor kernels
    pytest.mark.skipif(can_compile("cpu") is not None, reason="inductor needs a C++ compiler"),
]


@pytest.fixture
def always_fused(monkeypatch):
    """The tiny model's tensors are below the size from which the compiled kernels run: run them anyway."""
    monkeypatch.setattr(cpu_fused, "MIN_FUSED_ELEMENTS", 0)


def test_fused_modules_give_the_eager_logits(always_fused):
    eager = load_model("tiny", dtype="float32").model.eval()
    fused = load_model("tiny", dtype="float32").model.eval()
    layers = len(fused.model.layers)
    assert cpu_fused.fuse_elementwise(fused) == 4 * layers + 1  # 2 norms, MLP, attention per layer; final norm
    assert isinstance(fused.model.layers[0].mlp, cpu_fused.FusedMLP)
    ids = torch.randint(0, eager.config.vocab_size, (3, 17))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding
    with torch.inference_mode():
        ref = eager(input_ids=ids, attention_mask=mask).logits
        ours = fused(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours[mask.bool()], ref[mask.bool()], atol=1e-4, rtol=1e-4)


def test_backend_greedy_text_is_unchanged_by_fusion(always_fused):
    prompts = ["Tell me a story about a cat.", "Why is the sky blue? " * 3, "List three fruits."]
    s = Sampling(temperature=0.0, max_new_tokens=8)
    fused = HFBackend.from_name("tiny", dtype="float32", batch_size=2)
    plain = HFBackend.from_name("tiny", dtype="float32", batch_size=2, fuse_ops=False)
    assert fused.fused_modules > 0 and plain.fused_modules == 0
    assert [o.text for o in fused.generate(prompts, s, 0)] == [o.text for o in plain.generate(prompts, s, 0)]


def test_other_architectures_and_devices_are_left_alone():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    assert cpu_fused.fuse_elementwise(net) == 0
