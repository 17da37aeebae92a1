"""The hf generation backend on the tiny random model (float32): order, exactness vs generate, seeding, EOS."""

from __future__ import annotations

import pytest
import torch

from bft.generation.base import Completion, GenerationBackend, PromptTooLongError, Sampling
from bft.generation.hf import HFBackend
from bft.generation.sampling import prompt_seed, sample_tokens
from bft.models.registry import load_model
from bft.prompts import render_chat

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny", dtype="float32")


@pytest.fixture(scope="module")
def plain():
    """A separate copy for reference outputs: a backend switches its own model's attention implementation."""
    return load_model("tiny", dtype="float32")


@pytest.fixture(scope="module")
def prompts(tiny):
    return [render_chat(tiny.tokenizer, f"Question {i}: " + "tell me more " * (i % 4))[0] for i in range(7)]


def _plain_greedy(lm, prompt: str, n: int) -> list[int]:
    enc = lm.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    out = lm.model.generate(**enc, do_sample=False, max_new_tokens=n, pad_token_id=lm.tokenizer.pad_token_id)
    return out[0, enc.input_ids.shape[1] :].tolist()


def test_protocol(tiny):
    assert isinstance(HFBackend(tiny.model, tiny.tokenizer), GenerationBackend)


# small: the KV buffer grows while decoding and rows are prefilled a few at a time; large: one piece each
@pytest.mark.parametrize("grow_step,chunk_tokens", [(3, 40), (10**6, 10**6)])
def test_greedy_equals_generate_and_order_kept(tiny, plain, prompts, grow_step, chunk_tokens, monkeypatch):
    monkeypatch.setattr("bft.generation.hf.KV_GROW_STEP", grow_step)
    monkeypatch.setattr("bft.generation.hf.PREFILL_CHUNK_TOKENS", chunk_tokens)
    backend = HFBackend(tiny.model, tiny.tokenizer, batch_size=3)
    assert backend.decode_attention and plain.model.config._attn_implementation == "sdpa"
    outs = backend.generate(prompts, Sampling(temperature=0.0, max_new_tokens=10), seed=0)
    assert len(outs) == len(prompts) and all(isinstance(o, Completion) for o in outs)
    for prompt, out in zip(prompts, outs, strict=True):
        ref = _plain_greedy(plain, prompt, 10)
        assert out.text == tiny.tokenizer.decode(ref, skip_special_tokens=True)
        assert out.new_tokens == len(ref)
        assert out.prompt_tokens == len(tiny.tokenizer(prompt, add_special_tokens=False).input_ids)
    stats = backend.stats()
    assert stats["new_tokens"] == sum(o.new_tokens for o in outs)
    assert stats["prompt_tokens"] == sum(o.prompt_tokens for o in outs)


@pytest.mark.parametrize("apart_min", [0, 10**6])  # prefix kept once beside the rows, or copied into each row
def test_prefix_reuse_equals_no_reuse(tiny, prompts, apart_min):
    s = Sampling(temperature=0.0, max_new_tokens=8)
    shared = HFBackend(tiny.model, tiny.tokenizer, batch_size=4, prefix_apart_min=apart_min)
    plain = HFBackend(tiny.model, tiny.tokenizer, batch_size=4, share_prefix=False)
    assert shared._shared_prefix(shared._tokenize(prompts))  # the chat system prompt is shared
    assert [o.text for o in shared.generate(prompts, s, 0)] == [o.text for o in plain.generate(prompts, s, 0)]
    lp = [b.next_token_logprobs(prompts, ["a", "b"]) for b in (shared, plain)]
    torch.testing.assert_close(torch.tensor(lp[0]), torch.tensor(lp[1]), atol=1e-5, rtol=0)
    assert shared.stats()["prefill_tokens"] < plain.stats()["prefill_tokens"]


def test_drop_finished_equals_keep_finished(tiny, prompts):
    s = Sampling(temperature=1.0, max_new_tokens=12)
    a = HFBackend(tiny.model, tiny.tokenizer, batch_size=7).generate(prompts, s, 3)
    b = HFBackend(tiny.model, tiny.tokenizer, batch_size=7, drop_finished=False).generate(prompts, s, 3)
    assert [o.text for o in a] == [o.text for o in b]


def test_seeded_sampling_repeats_exactly_and_batching_changes_only_rounding(tiny, prompts):
    """The same call repeats exactly; another batch size or order changes only float rounding (row lengths and
    batch widths change the matmul shapes), which can flip a sample of this random model, so scores are compared."""
    s = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=10)
    a = HFBackend(tiny.model, tiny.tokenizer, batch_size=2).generate(prompts, s, seed=5)
    assert [o.text for o in a] == [o.text for o in HFBackend(tiny.model, tiny.tokenizer, batch_size=2).generate(prompts, s, 5)]
    other = HFBackend(tiny.model, tiny.tokenizer, batch_size=2).generate(prompts, s, seed=6)
    assert [o.text for o in a] != [o.text for o in other]
    for share in (True, False):
        by_size = [
            HFBackend(tiny.model, tiny.tokenizer, batch_size=b, share_prefix=share, prefix_apart_min=0).next_token_logprobs(
                p, ["a", "b"]
            )
            for b, p in ((1, prompts), (5, prompts[::-1]))
        ]
        torch.testing.assert_close(torch.tensor(by_size[0]), torch.tensor(by_size[1][::-1]), atol=1e-5, rtol=0)


def test_repeated_prompt_gets_distinct_samples(tiny, prompts):
    outs = HFBackend(tiny.model, tiny.tokenizer).generate([prompts[0]] * 4, Sampling(max_new_tokens=10), seed=0)
    assert len({o.text for o in outs}) > 1
    assert prompt_seed(0, "x", 0) != prompt_seed(0, "x", 1)


def test_eos_stops_and_counts(tiny, prompts):
    backend = HFBackend(tiny.model, tiny.tokenizer, batch_size=4)
    eos = tiny.tokenizer.eos_token_id
    # Make EOS the most likely token everywhere: greedy decoding must stop at the first step.
    head = tiny.model.get_output_embeddings()
    old = None if head.bias is None else head.bias.data.clone()
    head.bias = torch.nn.Parameter(torch.zeros(head.out_features))
    head.bias.data[eos] = 1e4
    try:
        outs = backend.generate(prompts[:3], Sampling(temperature=0.0, max_new_tokens=10), seed=0)
        forced = backend.generate(prompts[:3], Sampling(temperature=0.0, max_new_tokens=4, min_new_tokens=4), 0)
    finally:
        head.bias = None if old is None else torch.nn.Parameter(old)
    assert all(o.finished and o.new_tokens == 1 and o.text == "" for o in outs)
    assert all(o.new_tokens == 4 and not o.finished for o in forced)


def test_not_finished_when_length_runs_out(tiny, prompts):
    outs = HFBackend(tiny.model, tiny.tokenizer).generate(prompts[:2], Sampling(temperature=0.0, max_new_tokens=3), 0)
    assert all(o.new_tokens <= 3 for o in outs)
    assert all(o.finished or o.new_tokens == 3 for o in outs)


@pytest.mark.parametrize("drop_finished", [True, False])
def test_generation_stops_at_the_context_and_longer_prompts_are_refused(tiny, prompts, drop_finished):
    lengths = [len(tiny.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    context = max(lengths) + 3  # the longest prompt has room for 3 new tokens, the shortest for many more
    greedy = Sampling(temperature=0.0, max_new_tokens=12)
    free = HFBackend(tiny.model, tiny.tokenizer, batch_size=4).generate(prompts, greedy, 0)
    bounded = HFBackend(tiny.model, tiny.tokenizer, batch_size=4, drop_finished=drop_finished, context_length=context)
    capped = bounded.generate(prompts, greedy, 0)
    for n, a, b in zip(lengths, free, capped, strict=True):
        room = context - n
        assert b.new_tokens == min(a.new_tokens, room)
        assert b.finished == (a.finished and a.new_tokens <= room)
        assert a.text.startswith(b.text) or "\ufffd" in b.text  # a cut byte-level token decodes to U+FFFD
    assert bounded.stats()["context_capped"] == sum(context - n < 12 for n in lengths)
    i = lengths.index(max(lengths))
    assert HFBackend(tiny.model, tiny.tokenizer, context_length=max(lengths)).next_token_logprobs([prompts[i]], ["1"])
    tight = HFBackend(tiny.model, tiny.tokenizer, context_length=max(lengths) - 1)
    for call in (lambda: tight.generate(prompts, greedy, 0), lambda: tight.next_token_logprobs(prompts, ["1"])):
        with pytest.raises(PromptTooLongError, match=rf"prompt {i + 1} of 7 is {max(lengths)} tokens, .*corpus.max_tokens"):
            call()
    assert "prompt_tokens" not in tight.stats()  # refused before any model work


def test_next_token_logprobs_match_forward(tiny, prompts):
    backend = HFBackend(tiny.model, tiny.tokenizer, batch_size=3)
    cands = ["1", "2", "3", "4", "5"]
    got = backend.next_token_logprobs(prompts, cands)
    cand_ids = [tiny.tokenizer(c, add_special_tokens=False).input_ids[0] for c in cands]
    for prompt, row in zip(prompts, got, strict=True):
        enc = tiny.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            ref = torch.log_softmax(tiny.model(**enc).logits[0, -1].float(), -1)[cand_ids]
        assert torch.allclose(torch.tensor(row), ref, atol=1e-4)
    with pytest.raises(ValueError, match="single tokens"):
        backend.next_token_logprobs(prompts[:1], ["hello world"])


def test_sample_tokens_top_p_paths():
    torch.manual_seed(0)
    logits = torch.randn(6, 500)
    logits[:3, 0] = 20.0  # peaked rows: nucleus inside the top-k fast path; flat rows take the full sort
    gens = [torch.Generator().manual_seed(i) for i in range(6)]
    picks = sample_tokens(logits, Sampling(temperature=1.0, top_p=0.5), gens)
    assert picks[:3].tolist() == [0, 0, 0]
    probs = torch.softmax(logits[3:], -1)
    sorted_p, _ = probs.sort(-1, descending=True)
    for row, tok in zip(range(3), picks[3:].tolist(), strict=True):
        rank = (probs[row] > probs[row, tok]).sum()
        assert sorted_p[row, :rank].sum() < 0.5  # only tokens inside the nucleus are drawn


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_decode_attention_matches_sdpa_with_padding_and_gqa(dtype, tol):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from bft.generation.cpu_attention import decode_attention

    torch.manual_seed(0)
    batch, heads, kv_heads, length, dim = 3, 6, 2, 11, 16
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = heads // kv_heads, True
    q = torch.randn(batch, heads, 1, dim, dtype=dtype)
    k, v = (torch.randn(batch, kv_heads, length, dim, dtype=dtype) for _ in range(2))
    mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
    mask[0, ..., :4] = False  # left padding
    mask[1, ..., 7:] = False  # unfilled tail of the buffer
    ours, _ = decode_attention(module, q, k, v, mask, scaling=dim**-0.5)
    ref, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=dim**-0.5)
    assert ours.shape == ref.shape == (batch, 1, heads, dim)
    torch.testing.assert_close(ours.float(), ref.float(), atol=tol, rtol=tol)


def _with_shared_prefix(k, v, mask, prefix_len):
    """A random shared prefix (1, kv_heads, P, dim) and the keys, values and mask of the same rows with it copied in."""
    pk, pv = (torch.randn(1, k.shape[1], prefix_len, k.shape[-1], dtype=k.dtype) for _ in range(2))
    full_k = torch.cat([pk.expand(k.shape[0], -1, -1, -1), k], dim=2)
    full_v = torch.cat([pv.expand(v.shape[0], -1, -1, -1), v], dim=2)
    full_mask = torch.cat([torch.ones(*mask.shape[:-1], prefix_len, dtype=torch.bool), mask], dim=-1)
    return [(pk, pv)], full_k, full_v, full_mask


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_attention_with_shared_prefix_equals_prefix_copied_into_rows(dtype, tol):
    """Decode and prefill: the shared prefix read once equals SDPA over [prefix | own keys] per row."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from bft.generation.cpu_attention import decode_attention

    torch.manual_seed(0)
    batch, heads, kv_heads, length, dim, prefix_len = 3, 6, 2, 9, 16, 5
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal, module.layer_idx = heads // kv_heads, True, 0
    k, v = (torch.randn(batch, kv_heads, length, dim, dtype=dtype) for _ in range(2))
    for q_len in (1, 4):
        q = torch.randn(batch, heads, q_len, dim, dtype=dtype)
        mask = torch.zeros(batch, 1, q_len, length, dtype=torch.bool)
        for row, pad in enumerate((0, 1, 2)):  # [left padding][own tokens, causal][unfilled tail]
            for i in range(q_len):
                mask[row, 0, i, pad : length - q_len - 2 + i + 1] = True
        shared, full_k, full_v, full_mask = _with_shared_prefix(k, v, mask, prefix_len)
        ours, _ = decode_attention(module, q, k, v, mask, scaling=dim**-0.5, shared_prefix_kv=shared)
        ref, _ = sdpa_attention_forward(module, q, full_k, full_v, full_mask, scaling=dim**-0.5)
        torch.testing.assert_close(ours.float(), ref.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("block_elements", [1 << 22, 40])  # one block per row, or a few queries per block
def test_prefill_attention_matches_sdpa_with_padding_gqa_and_unfilled_tail(dtype, tol, block_elements, monkeypatch):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from bft.generation import cpu_attention

    monkeypatch.setattr(cpu_attention, "SCORE_BLOCK_ELEMENTS", block_elements)
    torch.manual_seed(0)
    batch, heads, kv_heads, prefix, q_len, tail, dim = 3, 6, 2, 4, 5, 3, 16
    length = prefix + q_len + tail
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = heads // kv_heads, True
    q = torch.randn(batch, heads, q_len, dim, dtype=dtype)
    k, v = (torch.randn(batch, kv_heads, length, dim, dtype=dtype) for _ in range(2))
    # [shared prefix][left padding][suffix][unfilled tail], causal inside the suffix, as the backend lays rows out
    pad = [0, 2, 4]
    mask = torch.zeros(batch, 1, q_len, length, dtype=torch.bool)
    for row, p in enumerate(pad):
        for i in range(q_len):
            mask[row, 0, i, :prefix] = i >= p
            mask[row, 0, i, prefix + p : prefix + i + 1] = True
    ours, _ = cpu_attention.decode_attention(module, q, k, v, mask, scaling=dim**-0.5)
    ref, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=dim**-0.5)
    assert ours.shape == ref.shape == (batch, q_len, heads, dim)
    assert torch.isfinite(ours).all()  # padding queries see nothing: a finite average, never NaN
    for row, p in enumerate(pad):  # padding queries' outputs are never read; the rest must agree
        torch.testing.assert_close(ours[row, p:].float(), ref[row, p:].float(), atol=tol, rtol=tol)


def _layout_and_sdpa(module, q, k, v, mask, apart: int, **layout):
    """Our attention given a layout keyword (and, with ``apart``, a random shared prefix kept apart), and SDPA with
    the full bool ``mask`` over the same keys (the prefix copied in front)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from bft.generation.cpu_attention import decode_attention

    shared, full_k, full_v, full_mask = None, k, v, mask
    if apart:
        shared, full_k, full_v, full_mask = _with_shared_prefix(k, v, mask, apart)
    scale = q.shape[-1] ** -0.5
    ours, _ = decode_attention(module, q, k, v, None, scaling=scale, shared_prefix_kv=shared, **layout)
    ref, _ = sdpa_attention_forward(module, q, full_k, full_v, full_mask, scaling=scale)
    return ours, ref


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("copied,apart", [(0, 0), (4, 0), (0, 3), (4, 3)])
def test_prefill_layout_flash_path_matches_sdpa_over_the_visible_keys(dtype, tol, copied, apart):
    """With ``prefill_layout`` (as the backend passes it) the flash path equals SDPA with the full mask over
    [shared prefix apart][copied prefix][left padding][own tokens, causal][unfilled tail]."""
    from bft.generation.cpu_attention import PrefillLayout

    torch.manual_seed(0)
    batch, heads, kv_heads, q_len, tail, dim = 3, 6, 2, 5, 3, 16
    length = copied + q_len + tail
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal, module.layer_idx = heads // kv_heads, True, 0
    q = torch.randn(batch, heads, q_len, dim, dtype=dtype)
    k, v = (torch.randn(batch, kv_heads, length, dim, dtype=dtype) for _ in range(2))
    own = (5, 3, 1)  # each row's tokens; the rest of its q_len positions are left padding
    mask = torch.zeros(batch, 1, q_len, length, dtype=torch.bool)
    for row, n in enumerate(own):
        for i in range(q_len - n, q_len):
            mask[row, 0, i, :copied] = True
            mask[row, 0, i, copied + q_len - n : copied + i + 1] = True
    ours, ref = _layout_and_sdpa(module, q, k, v, mask, apart, prefill_layout=PrefillLayout(copied, own, copied + q_len))
    assert ours.shape == ref.shape == (batch, q_len, heads, dim)
    for row, n in enumerate(own):  # padding queries' outputs are never read (zeros here); the rest must agree
        assert not ours[row, : q_len - n].any()
        torch.testing.assert_close(ours[row, q_len - n :].float(), ref[row, q_len - n :].float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("copied,apart,max_gap", [(0, 0, 64), (3, 0, 64), (3, 0, 0), (3, 0, 2), (0, 4, 64)])
def test_decode_layout_flash_path_matches_sdpa_over_the_visible_keys(dtype, tol, copied, apart, max_gap, monkeypatch):
    """A decode step with ``decode_layout`` (runs of 2 rows, each from its first row's start, later starts masked)
    equals SDPA with the full mask over [copied prefix][left padding][own tokens][unfilled tail]."""
    from bft.generation.cpu_attention import DecodeLayout

    monkeypatch.setattr(DecodeLayout, "MAX_GAP", max_gap)  # copied prefix read apart, or with the padding after it
    torch.manual_seed(0)
    batch, heads, kv_heads, own_max, tail, dim = 5, 6, 2, 7, 3, 16
    length = copied + own_max + tail
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal, module.layer_idx = heads // kv_heads, True, 0
    q = torch.randn(batch, heads, 1, dim, dtype=dtype)
    k, v = (torch.randn(batch, kv_heads, length, dim, dtype=dtype) for _ in range(2))
    starts = [copied + pad for pad in (0, 1, 1, 3, 6)]  # longest row first
    end = copied + own_max
    mask = torch.zeros(batch, 1, 1, length, dtype=torch.bool)
    for row, start in enumerate(starts):
        mask[row, ..., :copied] = True
        mask[row, ..., start:end] = True
    layout = DecodeLayout.build(starts, copied, end, dtype, rows_per_group=2)
    assert len(layout.groups) == 3
    if not copied:
        assert layout.groups[2][3] is None  # the last run is one row: nothing to mask
    assert layout.keys_read() < batch * length
    ours, ref = _layout_and_sdpa(module, q, k, v, mask, apart, decode_layout=layout)
    assert ours.shape == ref.shape == (batch, 1, heads, dim)
    torch.testing.assert_close(ours.float(), ref.float(), atol=tol, rtol=tol)


def test_prefill_chunks_bound_padded_tokens_and_keep_row_order():
    from bft.generation.batching import prefill_chunks

    chunks = prefill_chunks([5, 4, 4, 2, 1], budget=10)
    assert [(c.start, c.stop, w) for c, w in chunks] == [(0, 2, 5), (2, 4, 4), (4, 5, 1)]
    assert prefill_chunks([5, 4, 1], budget=None) == [(slice(0, 3), 5)]  # accelerators: one forward


def test_length_batches_pack_by_tokens_so_a_long_row_does_not_stretch_short_ones():
    from bft.generation.batching import length_batches

    lengths = [100, 5000, 120, 90, 110]
    batches = length_batches(lengths, batch_size=64, max_tokens=4000, extra=10)
    assert batches == [[1], [2, 4, 0, 3]]  # longest first; the 5,000-token row runs alone
    for batch in batches[1:]:
        assert len(batch) * (max(lengths[i] for i in batch) + 10) <= 4000
    assert length_batches(lengths, batch_size=2, max_tokens=None) == [[1, 2], [4, 0], [3]]


def test_padding_is_counted(tiny, monkeypatch):
    monkeypatch.setattr("bft.generation.hf.PREFILL_CHUNK_TOKENS", 10**6)  # one prefill forward: rows padded
    backend = HFBackend(tiny.model, tiny.tokenizer, batch_size=8, share_prefix=False)
    prompts = ["short", "a much longer prompt " * 6]
    lens = [len(tiny.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    backend.generate(prompts, Sampling(temperature=0.0, max_new_tokens=3, min_new_tokens=3), seed=0)
    stats = backend.stats()
    assert stats["prefill_padding_tokens"] == max(lens) - min(lens)
    # 2 decode steps; each row needed its own tokens so far, attention read prompt width + grown room per row
    assert stats["decode_kv_needed"] == sum(n + 1 for n in lens) + sum(n + 2 for n in lens)
    assert stats["decode_kv_read"] > stats["decode_kv_needed"]
    padding = backend._stats.padding()
    assert 0 < padding["prefill_padding_fraction"] < 1 and 0 < padding["decode_kv_padding_fraction"] < 1
