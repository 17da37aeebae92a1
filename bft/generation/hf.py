"""transformers backend, tuned for CPU throughput (also runs on a GPU).

What makes it fast (each measured by ``bft-bench``; numbers in the module docstring of ``bft.bench.cli``):

- **own decode loop** over ``model(...)`` instead of ``model.generate``: no per-step logits-processor stack,
  logits only for the last position (``logits_to_keep=1``), float32 only for the (B, vocab) logits row.
- **preallocated KV cache** (:class:`_BufferCache`): keys/values are written into a zeroed buffer sized for the
  batch's longest prompt + ``KV_GROW_STEP`` new tokens (grown by that much when full), and attention gets the whole
  (contiguous) buffer with the unfilled tail masked, as transformers' ``StaticCache`` does. ``DynamicCache``
  instead re-concatenates the whole cache every step, which costs as much as the matmuls at batch 128 x 1k tokens.
- **decode attention as two bmm** (:mod:`bft.generation.cpu_attention`) on CPU: SDPA's flash kernel spent 82% of
  a decode step on one-token queries; the bmm form over the contiguous buffer is about 8x faster.
- **finished rows leave the batch**: when a sequence emits EOS its row is removed from the cache, the mask and
  the inputs, so the batch shrinks instead of decoding padding until the longest sequence ends.
- **shared-prefix KV reuse**: the longest token prefix common to all prompts of a call (chat system prompt +
  the 1-5 rating rubric, the back-translation template, ...) is run through the model once; each batch's cache
  attends to it and only the per-prompt suffixes are prefilled. Each row sees exactly the positions and tokens it
  would see alone (explicit position ids, left padding masked). With the CPU bmm attention a long prefix
  (``PREFIX_APART_MIN``) is kept once and every row's queries read it in one matmul per head (the 487-token rating
  rubric is no longer copied into, and re-read from, each of 64 rows: less memory, less memory traffic per decode
  step); otherwise each row's cache starts with a copy, laid out ``[shared prefix][left padding][suffix]``.
- **pre-packed bfloat16 weights** (:mod:`bft.generation.cpu_linear`): oneDNN gets each linear layer's weight in its
  blocked layout once, instead of re-laying it out on every call (5-40% faster matmuls).
- **length-sorted batching** with left padding (order restored on return), bfloat16 where the CPU has bf16
  matrix units (``pick_dtype("auto")``), SDPA attention off CPU, large batches.
- **nucleus sampling without a full vocabulary sort**: the top 64 probabilities decide the nucleus for rows
  whose top-64 mass already reaches ``top_p`` (exact); other rows fall back to a full sort.

Seeded sampling: every prompt gets its own ``torch.Generator`` seeded from ``sha256(seed, k, prompt)``, where
``k`` counts earlier occurrences of the same prompt string in the call (so ``n`` copies of one prompt give ``n``
different samples). One uniform draw per generated token picks the token by inverse CDF. Hence the random
stream of a prompt depends only on (seed, prompt, k): the same call repeats exactly, and another batch size or
prompt order changes only floating-point rounding (batch widths change the shapes of the matmuls, and the shared
prefix is read by all rows' queries in one matmul), which can, rarely, flip a near-tie of a sampled token.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from bft.generation.base import BackendStats, Completion, Sampling, single_token_ids
from bft.generation.cpu_attention import use_decode_attention
from bft.generation.cpu_linear import pack_linear_layers

NUCLEUS_TOPK = 64
MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a separate forward pass
# Shared prefixes at least this long are kept once and read by every row (CPU bmm attention) instead of copied
# into each row: measured +15% decode tokens/s with the 487-token rating rubric, -15% with a 25-token chat header.
PREFIX_APART_MIN = 128
# Decode attention reads the whole KV buffer, so it grows by this many positions when full instead of being sized
# for ``max_new_tokens`` up front: fewer unfilled positions are read per step, for one copy every KV_GROW_STEP steps.
KV_GROW_STEP = 32
# Prompt tokens (rows x padded suffix length) per prefill forward on CPU: large forwards spill the activations out
# of cache; rating prompts (190 tokens after the rubric) prefilled 7.8 pairs/s 8 rows at a time vs 5.5 with 64 rows.
PREFILL_CHUNK_TOKENS = 2048


class _BufferLayer(DynamicLayer):
    """A KV layer writing into a preallocated buffer and returning views of its filled part (no per-step cat)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self._pending_skip = 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def _alloc(self, batch: int, like_k: torch.Tensor, like_v: torch.Tensor) -> None:
        self.dtype, self.device = like_k.dtype, like_k.device
        heads = like_k.shape[1]
        # zeros, not empty: attention reads the whole buffer, and 0 * garbage (NaN) in the masked tail would be NaN
        self._k = like_k.new_zeros(batch, heads, self.capacity, like_k.shape[-1])
        self._v = like_v.new_zeros(batch, heads, self.capacity, like_v.shape[-1])
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self._alloc(key_states.shape[0], key_states, value_states)

    def fill_prefix(self, keys: torch.Tensor, values: torch.Tensor, batch: int) -> None:
        """Start every row of the batch with the same prefix keys/values (shape [1, heads, P, dim])."""
        self._alloc(batch, keys, values)
        n = keys.shape[-2]
        self._k[:, :, :n] = keys
        self._v[:, :, :n] = values
        self.length = n
        self._views()

    def _views(self) -> None:
        self.keys = self._k[:, :, : self.length]
        self.values = self._v[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.length, self._pending_skip = self.length + self._pending_skip, 0
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV buffer overflow: {end} > {self.capacity}")
        self._k[:, :, self.length : end] = key_states
        self._v[:, :, self.length : end] = value_states
        self.length = end
        self._views()
        return self._k, self._v  # the whole buffer; the attention mask covers ``capacity`` positions

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, *args, **kwargs) -> tuple[int, int]:
        return self.capacity, 0

    def skip(self, n: int) -> None:
        """Leave the next ``n`` positions as they are (zeros): leading padding that no query attends to."""
        if self.is_initialized:
            self.length += n
            self._views()
        else:
            self._pending_skip = n  # applied when the first update allocates the buffer

    def grow(self, extra: int) -> None:
        """Make room for ``extra`` more positions (a new zeroed buffer, the filled part copied over)."""
        self.capacity += extra
        if self.is_initialized:
            pad = (0, 0, 0, extra)  # last dim untouched, positions dim padded at the end
            self._k = torch.nn.functional.pad(self._k, pad)
            self._v = torch.nn.functional.pad(self._v, pad)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._k = self._k.index_select(0, indices)
            self._v = self._v.index_select(0, indices)
            self._views()


class _BufferCache(DynamicCache):
    def __init__(self, num_layers: int, capacity: int) -> None:
        Cache.__init__(self, layers=[_BufferLayer(capacity) for _ in range(num_layers)])

    def skip(self, n: int) -> None:
        for layer in self.layers:
            layer.skip(n)

    def grow(self, extra: int) -> None:
        for layer in self.layers:
            layer.grow(extra)

    @classmethod
    def concat(cls, parts: list[_BufferCache]) -> _BufferCache:
        """One cache whose rows are those of ``parts`` in order (all filled to the same length and capacity)."""
        if len(parts) == 1:
            return parts[0]
        joined = cls(len(parts[0].layers), parts[0].layers[0].capacity)
        for i, layer in enumerate(joined.layers):
            pieces = [part.layers[i] for part in parts]
            layer.dtype, layer.device, layer.is_initialized = pieces[0].dtype, pieces[0].device, True
            layer._k = torch.cat([p._k for p in pieces])
            layer._v = torch.cat([p._v for p in pieces])
            layer.length = pieces[0].length
            layer._views()
            for p in pieces:
                p._k = p._v = p.keys = p.values = None  # free each part as soon as it is copied
        return joined


def _prefill_chunks(lengths: list[int], budget: int | None) -> list[tuple[slice, int]]:
    """Consecutive row ranges of a batch (rows sorted longest first) holding at most ``budget`` tokens (None: all
    rows at once) once padded to their own longest row; returns (rows, that row's length) pairs."""
    chunks: list[tuple[slice, int]] = []
    start = 0
    while start < len(lengths):
        width = max(lengths[start:])  # sorted input: lengths[start]; max() keeps unsorted input correct
        end = len(lengths) if budget is None else min(len(lengths), start + max(1, budget // width))
        chunks.append((slice(start, end), max(lengths[start:end])))
        start = end
    return chunks


def prompt_seed(seed: int, prompt: str, occurrence: int) -> int:
    """The documented per-prompt seed: sha256 of (seed, occurrence of this prompt in the call, prompt text)."""
    digest = hashlib.sha256(f"{seed}\x00{occurrence}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index i with cdf[i-1] <= u * total < cdf[i] for each row of (unnormalised) ``probs``."""
    cdf = probs.cumsum(-1)
    target = (u * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[-1] - 1).squeeze(-1)


def _nucleus(sorted_probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail of descending-sorted probabilities outside the top-p nucleus (the first token always stays)."""
    before = sorted_probs.cumsum(-1) - sorted_probs
    return sorted_probs * (before < top_p)


def sample_tokens(logits: torch.Tensor, sampling: Sampling, generators: list[torch.Generator]) -> torch.Tensor:
    """Pick one token per row of float32 ``logits`` (B, V); row i draws its uniform from ``generators[i]``."""
    if sampling.greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    u = torch.cat([torch.rand(1, generator=g) for g in generators])
    if sampling.top_p >= 1.0:
        return _inverse_cdf(probs, u)
    k = min(NUCLEUS_TOPK, probs.shape[-1])
    top_p_vals, top_idx = probs.topk(k, dim=-1)
    out = torch.empty(probs.shape[0], dtype=torch.long)
    small = top_p_vals.sum(-1) >= sampling.top_p  # the nucleus lies inside the top k: exact without a full sort
    if small.any():
        rows = small.nonzero().squeeze(-1)
        pick = _inverse_cdf(_nucleus(top_p_vals[rows], sampling.top_p), u[rows])
        out[rows] = top_idx[rows].gather(1, pick.unsqueeze(-1)).squeeze(-1)
    if not small.all():
        rows = (~small).nonzero().squeeze(-1)
        sorted_probs, sorted_idx = probs[rows].sort(dim=-1, descending=True)
        pick = _inverse_cdf(_nucleus(sorted_probs, sampling.top_p), u[rows])
        out[rows] = sorted_idx.gather(1, pick.unsqueeze(-1)).squeeze(-1)
    return out


def stop_token_ids(model, tokenizer) -> set[int]:
    """EOS ids of the generation config and the tokenizer, plus the chat end-of-turn token when it exists."""
    ids: set[int] = set()
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    for marker in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return ids


class HFBackend:
    """Batched generation and next-token scoring with a transformers causal LM."""

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 32,
        share_prefix: bool = True,
        drop_finished: bool = True,
        max_batch_tokens: int | None = None,
        prefix_apart_min: int = PREFIX_APART_MIN,
    ) -> None:
        self.model = model.eval()
        self.prefix_apart_min = prefix_apart_min
        self.decode_attention = use_decode_attention(model)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.share_prefix = share_prefix
        self.drop_finished = drop_finished
        self.device = next(model.parameters()).device
        self.stop_ids = stop_token_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.stop_ids)
        self.num_layers = model.config.get_text_config(decoder=True).num_hidden_layers
        self._stats = BackendStats()
        self.packed_linear_layers = 0  # set by ``from_name`` (see :mod:`bft.generation.cpu_linear`)

    @classmethod
    def from_name(
        cls,
        model_name: str,
        dtype: str = "auto",
        adapter: str | None = None,
        batch_size: int = 32,
        max_batch_tokens: int | None = None,
        pack_weights: bool = True,
    ):
        from bft.models.registry import load_model

        loaded = load_model(model_name, dtype=dtype, adapter=adapter)
        backend = cls(loaded.model, loaded.tokenizer, batch_size=batch_size, max_batch_tokens=max_batch_tokens)
        if pack_weights:  # the backend owns this model, so its linear layers may become inference-only
            backend.packed_linear_layers = pack_linear_layers(backend.model)
        return backend

    # ------------------------------------------------------------------ helpers

    def _tokenize(self, prompts: list[str]) -> list[list[int]]:
        return self.tokenizer(prompts, add_special_tokens=False)["input_ids"]

    def _shared_prefix(self, ids: list[list[int]]) -> list[int]:
        """Longest common token prefix, leaving each prompt at least one token of its own."""
        if not self.share_prefix or len(ids) < 2:
            return []
        limit = min(len(x) for x in ids) - 1
        first = ids[0]
        n = 0
        while n < limit and all(x[n] == first[n] for x in ids):
            n += 1
        return first[:n] if n >= MIN_SHARED_PREFIX else []

    def _prefix_kv(self, prefix: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        if not prefix:
            return None
        cache = _BufferCache(self.num_layers, len(prefix))
        self.model(
            input_ids=torch.tensor([prefix], device=self.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._stats.add("prefill_tokens", len(prefix))
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _prefill_budget(self) -> int | None:
        """Prompt tokens per prefill forward: ``PREFILL_CHUNK_TOKENS`` on CPU, where large forwards spill out of
        cache; unbounded on accelerators, which want the largest forwards (``max_batch_tokens`` still applies)."""
        return PREFILL_CHUNK_TOKENS if self.device.type == "cpu" else None

    def _batches(self, ids: list[list[int]], extra: int = 0, max_tokens: int | None = None) -> list[list[int]]:
        """Indices grouped into batches of similar length, longest first (memory peaks show up at once).

        A batch holds at most ``batch_size`` rows and at most ``max_tokens`` (default ``max_batch_tokens``) tokens
        of prompt + ``extra`` (new tokens) per row times rows, which bounds the KV cache and attention memory.
        """
        budget = max_tokens if max_tokens is not None else self.max_batch_tokens
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        batches: list[list[int]] = []
        for i in order:
            if batches:
                batch = batches[-1]
                width = len(ids[batch[0]]) + extra  # the batch's first row is its longest
                fits = budget is None or (len(batch) + 1) * width <= budget
                if len(batch) < self.batch_size and fits:
                    batch.append(i)
                    continue
            batches.append([i])
        return batches

    def _prefill(self, suffixes: list[list[int]], prefix_kv, plen: int, extra: int, keep_cache: bool = True):
        """Run the suffixes after the shared prefix.

        Returns (last logits fp32, cache, mask buffer, next positions, keyword arguments for later model calls).
        With the CPU bmm attention the prefix stays one (1, heads, P, dim) tensor per layer that attention reads
        beside each row's own buffer (``shared_prefix_kv``); otherwise it is copied to the front of every row.
        Rows go through the model ``PREFILL_CHUNK_TOKENS`` tokens at a time, and their caches are joined for
        decoding (``keep_cache``).
        """
        bsz, slen = len(suffixes), max(len(s) for s in suffixes)
        apart = prefix_kv is not None and self.decode_attention and plen >= self.prefix_apart_min
        offset = plen if prefix_kv is not None and not apart else 0  # buffer positions the prefix takes
        capacity = offset + slen + extra
        input_ids = torch.full((bsz, slen), self.pad_id, dtype=torch.long)
        mask = torch.zeros((bsz, capacity), dtype=torch.long)
        mask[:, :offset] = 1
        lens = torch.tensor([len(s) for s in suffixes])
        for row, s in enumerate(suffixes):
            input_ids[row, slen - len(s) :] = torch.tensor(s)
            mask[row, offset + slen - len(s) : offset + slen] = 1
        positions = (torch.arange(slen).unsqueeze(0) - (slen - lens).unsqueeze(1)).clamp_(min=0) + plen
        model_kwargs = {"shared_prefix_kv": prefix_kv} if apart else {}
        logits, caches = [], []
        for rows, width in _prefill_chunks(lens.tolist(), self._prefill_budget()):
            # this chunk's rows are at most ``width`` long: its leading ``slen - width`` positions are padding in
            # every row, left as zeros in the buffer and masked, so the chunk runs ``width`` tokens, not ``slen``
            cache = _BufferCache(self.num_layers, capacity)
            if prefix_kv is not None and not apart:
                for layer, (k, v) in zip(cache.layers, prefix_kv, strict=True):
                    layer.fill_prefix(k, v, len(input_ids[rows]))
            cache.skip(slen - width)
            out = self.model(
                input_ids=input_ids[rows, slen - width :].to(self.device),
                attention_mask=mask[rows].to(self.device),
                position_ids=positions[rows, slen - width :].to(self.device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
                **model_kwargs,
            )
            logits.append(out.logits[:, -1].float().cpu())
            if keep_cache:
                caches.append(cache)
        cache = _BufferCache.concat(caches) if keep_cache else None
        self._stats.add("prefill_tokens", int(lens.sum()))
        return torch.cat(logits), cache, mask, lens + plen, model_kwargs

    # ------------------------------------------------------------------ API

    @torch.inference_mode()
    def generate(self, prompts: list[str], sampling: Sampling, seed: int) -> list[Completion]:
        start = time.perf_counter()
        ids = self._tokenize(prompts)
        seen: Counter[str] = Counter()
        generators = []
        for p in prompts:
            generators.append(torch.Generator().manual_seed(prompt_seed(seed, p, seen[p])))
            seen[p] += 1
        prefix = self._shared_prefix(ids)
        prefix_kv = self._prefix_kv(prefix)
        results: list[Completion | None] = [None] * len(prompts)
        for batch in self._batches(ids, extra=sampling.max_new_tokens):
            outs = self._decode(
                [ids[i][len(prefix) :] for i in batch], [generators[i] for i in batch], sampling, prefix_kv, len(prefix)
            )
            for i, (tokens, finished) in zip(batch, outs, strict=True):
                body = tokens[:-1] if finished else tokens
                results[i] = Completion(
                    text=self.tokenizer.decode(body, skip_special_tokens=True),
                    prompt_tokens=len(ids[i]),
                    new_tokens=len(tokens),
                    finished=finished,
                )
        self._stats.generated(ids, results, start)
        return results

    def _decode(self, suffixes, generators, sampling: Sampling, prefix_kv, plen: int) -> list[tuple[list[int], bool]]:
        bsz = len(suffixes)
        max_new = sampling.max_new_tokens
        tokens: list[list[int]] = [[] for _ in range(bsz)]
        finished = [False] * bsz
        if max_new <= 0:
            return [(t, False) for t in tokens]
        first_room = min(max_new, KV_GROW_STEP)
        logits, cache, mask, positions, model_kwargs = self._prefill(suffixes, prefix_kv, plen, first_room)
        length = mask.shape[1] - first_room  # the filled part of the buffer
        room_left = max_new - first_room  # positions the buffer may still need to grow by
        alive = list(range(bsz))
        stop = torch.tensor(sorted(self.stop_ids))
        for step in range(max_new):
            if step < sampling.min_new_tokens:
                logits[:, stop] = float("-inf")
            nxt = sample_tokens(logits, sampling, [generators[r] for r in alive])
            keep = []
            for j, (row, tok) in enumerate(zip(alive, nxt.tolist(), strict=True)):
                if finished[row]:  # only when drop_finished is off: the row rides along, its tokens are ignored
                    continue
                tokens[row].append(tok)
                if tok in self.stop_ids:
                    finished[row] = True
                else:
                    keep.append(j)
            if not keep or step == max_new - 1:
                break
            if self.drop_finished and len(keep) < len(alive):
                idx = torch.tensor(keep)
                cache.batch_select_indices(idx.to(self.device))
                mask, positions, nxt = mask[idx], positions[idx], nxt[idx]
                alive = [alive[j] for j in keep]
            if length == mask.shape[1]:
                extra = min(KV_GROW_STEP, room_left)
                cache.grow(extra)
                mask = torch.nn.functional.pad(mask, (0, extra))
                room_left -= extra
            mask[:, length] = 1
            length += 1
            out = self.model(
                input_ids=nxt.unsqueeze(-1).to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.unsqueeze(-1).to(self.device),
                past_key_values=cache,
                use_cache=True,
                **model_kwargs,
            )
            positions = positions + 1
            logits = out.logits[:, -1].float().cpu()
        return list(zip(tokens, finished, strict=True))

    @torch.inference_mode()
    def next_token_logprobs(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        start = time.perf_counter()
        cand_ids = single_token_ids(self.tokenizer, candidates)
        ids = self._tokenize(prompts)
        prefix = self._shared_prefix(ids)
        prefix_kv = self._prefix_kv(prefix)
        results: list[list[float]] = [[] for _ in prompts]
        cand = torch.tensor(cand_ids)
        suffixes = [x[len(prefix) :] for x in ids]
        # no decoding follows, so batches need not be wide: one prefill chunk each, rows of similar length
        chunk = self._prefill_budget()
        budget = min(chunk, self.max_batch_tokens or chunk) if chunk is not None else self.max_batch_tokens
        for batch in self._batches(suffixes, max_tokens=budget):
            logits, *_ = self._prefill([suffixes[i] for i in batch], prefix_kv, len(prefix), 0, keep_cache=False)
            logp = torch.log_softmax(logits, dim=-1)[:, cand]
            for i, row in zip(batch, logp.tolist(), strict=True):
                results[i] = row
        self._stats.scored(ids, start)
        return results

    def stats(self) -> dict[str, Any]:
        return self._stats.as_dict()
