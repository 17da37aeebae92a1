"""oneDNN-packed linear layers: equal to nn.Linear within rounding, and only packed where they can be."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from bft.generation.base import Sampling
from bft.generation.cpu_linear import PackedLinear, can_pack, onednn_bf16, pack_linear_layers
from bft.generation.hf import HFBackend

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
BF16 = pytest.param(
    torch.bfloat16,
    marks=pytest.mark.skipif(not onednn_bf16(), reason="needs oneDNN bfloat16"),
)
TOLERANCE = {torch.bfloat16: 1e-2, torch.float32: 1e-5}


def _net(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 40), nn.SiLU(), nn.Linear(40, 8, bias=False)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_packed_layers_equal_linear_for_any_row_count(dtype):
    net = _net(dtype)
    x = torch.randn(3, 5, 24, dtype=dtype)
    ref = [net(x[:, :n]) for n in (1, 5)]
    assert pack_linear_layers(net) == 2
    assert all(isinstance(m, PackedLinear) for m in (net[0], net[2]))
    for n, expected in zip((1, 5), ref, strict=True):
        tol = TOLERANCE[dtype]
        torch.testing.assert_close(net(x[:, :n]), expected.detach(), atol=tol, rtol=tol)


def test_other_dtypes_are_left_alone():
    net = _net(torch.float64)
    assert not can_pack(net) and pack_linear_layers(net) == 0
    assert isinstance(net[0], nn.Linear)


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_backend_from_name_packs_and_greedy_text_is_unchanged(dtype):
    prompts = ["Tell me a story about a cat.", "Why is the sky blue?", "List three fruits."]
    s = Sampling(temperature=0.0, max_new_tokens=8)
    name = str(dtype).removeprefix("torch.")
    packed = HFBackend.from_name("tiny", dtype=name, batch_size=2)
    plain = HFBackend.from_name("tiny", dtype=name, batch_size=2, pack_weights=False)
    assert packed.packed_linear_layers > 0 and plain.packed_linear_layers == 0
    assert [o.text for o in packed.generate(prompts, s, 0)] == [o.text for o in plain.generate(prompts, s, 0)]


def _file_mapped_ranges(suffix: str) -> list[tuple[int, int]]:
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(suffix):
            start, end = line.split()[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads Linux memory maps")
def test_packed_backend_holds_no_view_of_the_checkpoint_file():
    """A surviving view into the safetensors memory map would keep every original weight resident (1.64 vs 1.21 GB
    RSS for SmolLM2 in float32)."""
    packed = HFBackend.from_name("tiny", dtype="float32")
    tensors = [*packed.model.parameters(), *(b for b in packed.model.buffers() if not b.is_mkldnn)]
    mapped = _file_mapped_ranges(".safetensors")
    assert tensors and not any(lo <= t.data_ptr() < hi for t in tensors for lo, hi in mapped)
