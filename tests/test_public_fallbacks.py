"""The CPU engine's private PyTorch / transformers entry points each have a public fallback, chosen at run time
when the private one is missing; forced here (monkeypatch), each gives what the private path gives.

- the CPU flash kernel (``aten._scaled_dot_product_flash_attention_for_cpu``) -> scores, log-sum-exp and values
  from public ops (:func:`bft.generation.cpu_attention._attention_with_lse`);
- oneDNN weight packing (``torch.ops.mkldnn._*``) -> nothing packed, plain ``nn.Linear`` / ``F.linear``;
- the layered transformers cache (``DynamicLayer`` subclass) -> :class:`PublicBufferCache`, a ``DynamicCache``
  behind the public cache methods.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bft.generation import cpu_attention, cpu_linear, kv_cache
from bft.generation.cpu_attention import DecodeLayout, PrefillLayout, decode_attention

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
needs_kernel = pytest.mark.skipif(not cpu_attention._has_flash_kernel(), reason="this PyTorch has no CPU flash kernel")


def _module(heads: int, kv_heads: int) -> nn.Module:
    module = nn.Module()
    module.num_key_value_groups, module.is_causal, module.layer_idx = heads // kv_heads, True, 0
    return module


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal,masked,q_len", [(True, False, 6), (False, True, 1), (False, False, 4)])
def test_public_attention_gives_the_kernels_output_and_log_sum_exp(dtype, causal, masked, q_len):
    torch.manual_seed(0)
    batch, heads, kv_heads, dim = 3, 6, 2, 16
    length = q_len if causal else 9
    q = torch.randn(batch, heads, q_len, dim, dtype=dtype)
    k, v = (torch.randn(batch, kv_heads, length, dim, dtype=dtype) for _ in range(2))
    mask = None
    if masked:  # additive, in the query's dtype, as DecodeLayout builds it: rows that start later
        mask = torch.zeros(batch, 1, 1, length, dtype=dtype)
        mask[1, ..., :2] = mask[2, ..., :5] = torch.finfo(dtype).min
    out, lse = cpu_attention._flash(q, k, v, causal, dim**-0.5, mask)
    ref_out, ref_lse = cpu_attention._attention_with_lse(q, k, v, causal, dim**-0.5, mask)
    assert out.shape == ref_out.shape and lse.shape == ref_lse.shape == (batch, heads, q_len)
    torch.testing.assert_close(ref_out.float(), out.float(), atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(ref_lse, lse.float(), atol=TOL[dtype], rtol=TOL[dtype])


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layout_attention_is_the_same_without_the_kernel(dtype, monkeypatch):
    """The backend's prefill and decode calls (copied prefix, a shared prefix apart, left padding, runs of rows)."""
    torch.manual_seed(0)
    batch, heads, kv_heads, q_len, copied, dim = 3, 6, 2, 5, 4, 16
    module, scale = _module(heads, kv_heads), dim**-0.5
    length = copied + q_len + 3
    k, v = (torch.randn(batch, kv_heads, length, dim, dtype=dtype) for _ in range(2))
    shared = [tuple(torch.randn(1, kv_heads, 7, dim, dtype=dtype) for _ in range(2))]
    prefill = PrefillLayout(copied, (5, 3, 1), copied + q_len)
    decode = DecodeLayout.build([copied, copied + 1, copied + 3], copied, copied + q_len, dtype, rows_per_group=2)
    calls = [
        (torch.randn(batch, heads, q_len, dim, dtype=dtype), {"prefill_layout": prefill}),
        (torch.randn(batch, heads, 1, dim, dtype=dtype), {"decode_layout": decode}),
    ]
    for q, layout in calls:
        fast, _ = decode_attention(module, q, k, v, None, scaling=scale, shared_prefix_kv=shared, **layout)
        monkeypatch.setattr(cpu_attention, "FLASH_KERNEL", False)
        public, _ = decode_attention(module, q, k, v, None, scaling=scale, shared_prefix_kv=shared, **layout)
        monkeypatch.setattr(cpu_attention, "FLASH_KERNEL", True)
        torch.testing.assert_close(public.float(), fast.float(), atol=TOL[dtype], rtol=TOL[dtype])


def test_without_the_packing_ops_linear_layers_stay_public(monkeypatch):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(24, 40), nn.SiLU(), nn.Linear(40, 8, bias=False))
    x = torch.randn(3, 5, 24)
    expected = net(x).detach()
    monkeypatch.setattr(cpu_linear, "_PACKING_OPS", ("_reorder_linear_weight", "_no_such_op_in_a_later_release"))
    assert not cpu_linear.has_packing_ops() and not cpu_linear.onednn_bf16() and not cpu_linear.can_pack(net)
    assert cpu_linear.pack_linear_layers(net) == 0 and all(type(m) is nn.Linear for m in (net[0], net[2]))
    torch.testing.assert_close(net(x), expected)
    monkeypatch.undo()
    if cpu_linear.has_packing_ops():  # and the packed path gives the same
        assert cpu_linear.pack_linear_layers(net) == 2
        torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-5)


def test_the_public_cache_is_chosen_where_the_layered_api_is_missing(monkeypatch):
    import transformers.cache_utils as cache_utils

    assert kv_cache.buffer_cache_class() is kv_cache.LayeredBufferCache  # this transformers has it
    monkeypatch.delattr(cache_utils, "DynamicLayer")
    assert not kv_cache.has_layered_cache_api() and kv_cache.buffer_cache_class() is kv_cache.PublicBufferCache


@pytest.mark.slow
def test_public_cache_generates_what_the_layered_cache_does(monkeypatch):
    """Greedy and seeded-sampled text on the tiny model, with a shared prefix (kept apart and copied), KV buffer
    growth, rows dropped as they finish and prefill in chunks: the same with either cache."""
    from bft.generation import hf
    from bft.generation.base import Sampling
    from bft.models.registry import load_model

    lm = load_model("tiny", dtype="float32")
    backend = hf.HFBackend(lm.model, lm.tokenizer, batch_size=3, prefix_apart_min=16)
    header = "You are a careful assistant. Answer in one short paragraph, please. " * 2
    prompts = [header + f"Question {i}: " + "tell me more " * (i % 4) for i in range(5)]
    monkeypatch.setattr(hf, "KV_GROW_STEP", 3)
    monkeypatch.setattr(hf, "PREFILL_CHUNK_TOKENS", 60)
    runs = {}
    for cache in (kv_cache.LayeredBufferCache, kv_cache.PublicBufferCache):
        monkeypatch.setattr(hf, "BufferCache", cache)
        greedy = backend.generate(prompts, Sampling(temperature=0.0, max_new_tokens=9), seed=0)
        sampled = backend.generate(prompts, Sampling(temperature=1.0, top_p=0.9, max_new_tokens=9), seed=3)
        scores = backend.next_token_logprobs(prompts, ["1", "2"])
        runs[cache] = ([o.text for o in greedy], [o.text for o in sampled], scores)
    layered, public = runs.values()
    assert public[:2] == layered[:2]
    torch.testing.assert_close(torch.tensor(public[2]), torch.tensor(layered[2]))
