"""transformers backend, tuned for CPU throughput (also runs on a GPU).

What makes it fast (each measured by ``bft-bench``; numbers in the module docstring of ``bft.bench.cli``):

- **own decode loop** over ``model(...)`` instead of ``model.generate``: no per-step logits-processor stack,
  logits only for the last position (``logits_to_keep=1``), float32 only for the (B, vocab) logits row.
- **preallocated KV cache** (:class:`bft.generation.kv_cache.BufferCache`): keys/values are written into a zeroed buffer sized for the
  batch's longest prompt + ``KV_GROW_STEP`` new tokens (grown by that much when full), and attention gets the whole
  (contiguous) buffer with the unfilled tail masked, as transformers' ``StaticCache`` does. ``DynamicCache``
  instead re-concatenates the whole cache every step, which costs as much as the matmuls at batch 128 x 1k tokens.
- **attention over exactly the keys a row needs** (:mod:`bft.generation.cpu_attention`) on CPU: the backend tells
  attention where each row's tokens are (``prefill_layout``, ``decode_layout``), and PyTorch's CPU flash kernel runs
  on them (causal in prefill without a score matrix; decode skips left padding and the buffer's unfilled tail).
  transformers' SDPA path copied the KV cache per step (``repeat_kv``) and took 82% of a decode step.
- **fused element-wise kernels for prefill** (:mod:`bft.generation.cpu_fused`): RMSNorm, rotary embedding and the
  SiLU gate compiled by inductor for large calls (3-12x faster than eager there).
- **finished rows leave the batch**: when a sequence emits EOS its row is removed from the cache, the mask and
  the inputs, so the batch shrinks instead of decoding padding until the longest sequence ends.
- **shared-prefix KV reuse**: the longest token prefix common to all prompts of a call (chat system prompt +
  the 1-5 rating rubric, the back-translation template, ...) is run through the model once; each batch's cache
  attends to it and only the per-prompt suffixes are prefilled. Each row sees exactly the positions and tokens it
  would see alone (explicit position ids, left padding masked). With the CPU bmm attention a long prefix
  (``PREFIX_APART_MIN``) is kept once and every row's queries read it in one matmul per head (the 487-token rating
  rubric is no longer copied into, and re-read from, each of 64 rows: less memory, less memory traffic per decode
  step); otherwise each row's cache starts with a copy, laid out ``[shared prefix][left padding][suffix]``.
- **pre-packed weights** (:mod:`bft.generation.cpu_linear`, bfloat16 and float32): oneDNN gets each linear layer's
  weight in its blocked layout once, instead of re-laying it out on every call (5-40% faster bf16 matmuls; in
  float32 the tied LM head of a decode step 3x faster than ``F.linear``).
- **batches packed by token length** (:func:`bft.generation.batching.length_batches`: sorted, budgeted by
  ``max_batch_tokens``) with left padding (order restored on return), bfloat16 where the CPU has bf16 matrix units
  (``pick_dtype("auto")``), large batches. The padding that remains is counted in ``stats()``
  (``prefill_padding_tokens``, ``decode_kv_read`` vs ``decode_kv_needed``; ``bft-bench`` shows it).
- **nucleus sampling without a full vocabulary sort**: the top 64 probabilities decide the nucleus for rows
  whose top-64 mass already reaches ``top_p`` (exact); other rows fall back to a full sort.

On a GPU (``generation.device``: ``auto`` picks CUDA when there is one) none of the CPU paths above engage (packing,
fused kernels and the CPU attention check the model's device): attention is PyTorch's SDPA restricted to its flash
and memory-efficient kernels (the cuDNN one plans anew for every new shape, and decode changes the key length every
32 steps), batches are sized from the GPU memory free at each call (:mod:`bft.generation.gpu_memory`) instead of
``batch_size`` / ``max_batch_tokens``, and a decode step keeps the mask, positions, logits and sampling on the
device: the host reads back only the B new token ids (to stop finished rows), not the (B, vocab) logits.

Seeded sampling: every prompt gets its own ``torch.Generator`` seeded from ``sha256(seed, k, prompt)``, where
``k`` counts earlier occurrences of the same prompt string in the call (so ``n`` copies of one prompt give ``n``
different samples). One uniform draw per generated token picks the token by inverse CDF. Hence the random
stream of a prompt depends only on (seed, prompt, k): the same call repeats exactly, and another batch size or
prompt order changes only floating-point rounding (batch widths change the shapes of the matmuls, and the shared
prefix is read by all rows' queries in one matmul), which can, rarely, flip a near-tie of a sampled token.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections import Counter
from typing import Any

import torch

from bft.generation.base import BackendStats, Completion, Sampling, check_context, single_token_ids
from bft.generation.batching import length_batches, prefill_chunks
from bft.generation.cpu_attention import DecodeLayout, PrefillLayout, use_decode_attention
from bft.generation.cpu_fused import fuse_elementwise
from bft.generation.cpu_linear import pack_linear_layers
from bft.generation.gpu_memory import BatchLimits, ModelShape, batch_limits, free_cuda_bytes
from bft.generation.kv_cache import BufferCache
from bft.generation.sampling import prompt_seed, sample_tokens, stop_token_ids

log = logging.getLogger(__name__)

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


def sdpa_kernels(device: torch.device):
    """A context for model calls on ``device``: off CPU, SDPA's flash and memory-efficient kernels (math as the
    fallback), never cuDNN's, which builds a new plan for every shape it has not seen (decode changes the key
    length every ``KV_GROW_STEP`` steps, and every batch its width); on CPU nothing changes."""
    if device.type == "cpu":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def cache_keyword(model) -> str:
    """The forward keyword that takes the KV cache: ``cache`` from transformers 5.x (``past_key_values`` is
    deprecated there, to be removed in 5.40), ``past_key_values`` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper passes kwargs on
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class HFBackend:
    """Batched generation and next-token scoring with a transformers causal LM.

    ``context_length`` (default: the model's ``max_position_embeddings``) bounds each row as in vLLM: a prompt that
    does not fit is refused before any work (:class:`bft.generation.base.PromptTooLongError`), and a row's
    generation stops, unfinished, where prompt + new tokens reach it (counted as ``context_capped``).
    """

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 32,
        share_prefix: bool = True,
        drop_finished: bool = True,
        max_batch_tokens: int | None = None,
        prefix_apart_min: int = PREFIX_APART_MIN,
        context_length: int | None = None,
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
        self.dtype = next(model.parameters()).dtype
        self.on_cpu = self.device.type == "cpu"
        self.shape: ModelShape | None = None  # read off the config when a GPU call is planned
        self._limits = BatchLimits(batch_size, max_batch_tokens or 0, PREFILL_CHUNK_TOKENS)  # set per call off CPU
        self.stop_ids = stop_token_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.stop_ids)
        text_config = model.config.get_text_config(decoder=True)
        self.num_layers = text_config.num_hidden_layers
        # positions the model was trained on: longer prompts are refused, generation stops there (as in vLLM)
        self.context_length = context_length or getattr(text_config, "max_position_embeddings", None)
        self.cache_kwarg = cache_keyword(model)
        self._stats = BackendStats()
        self.packed_linear_layers = 0  # set by ``from_name`` (see :mod:`bft.generation.cpu_linear`)
        self.fused_modules = 0  # likewise (see :mod:`bft.generation.cpu_fused`)

    @classmethod
    def from_name(
        cls,
        model_name: str,
        dtype: str = "auto",
        adapter: str | None = None,
        batch_size: int = 32,
        max_batch_tokens: int | None = None,
        pack_weights: bool = True,
        fuse_ops: bool = True,
        device: str = "auto",
    ):
        """Load ``model_name`` (+ LoRA ``adapter``, merged) on ``device`` (a ``generation.device`` setting: auto,
        cpu, cuda, cuda:N; cuda without a CUDA GPU raises ConfigError before loading)."""
        from bft.config.machine import resolve_device
        from bft.models.registry import load_model

        where = resolve_device(device)
        loaded = load_model(model_name, dtype=dtype, adapter=adapter, device=where)
        backend = cls(loaded.model, loaded.tokenizer, batch_size=batch_size, max_batch_tokens=max_batch_tokens)
        if backend.on_cpu and pack_weights:  # the backend owns this model, so its linear layers may become inference-only
            backend.packed_linear_layers = pack_linear_layers(backend.model)
        if backend.on_cpu and fuse_ops:  # likewise: element-wise kernels fused for CPU prefill (Llama architectures)
            backend.fused_modules = fuse_elementwise(backend.model)
        log.info("%s on %s (%s)", model_name, backend.device, str(backend.dtype).removeprefix("torch."))
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

    def _attention(self):
        return sdpa_kernels(self.device)

    def _plan_call(self, lengths: list[int], new_tokens: int) -> BatchLimits:
        """This call's rows and tokens per batch and tokens per prefill forward: the settings on CPU; on a GPU,
        what the memory free now holds (:func:`bft.generation.gpu_memory.batch_limits`)."""
        if self.on_cpu:
            self._limits = BatchLimits(self.batch_size, self.max_batch_tokens or 0, PREFILL_CHUNK_TOKENS)
        else:
            free = free_cuda_bytes(self.device)
            size = torch.finfo(self.dtype).bits // 8
            if self.shape is None:
                self.shape = ModelShape.from_config(self.model.config)
            self._limits = batch_limits(free, self.shape, size, lengths, new_tokens, self.context_length)
        return self._limits

    def _prefix_kv(self, prefix: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        if not prefix:
            return None
        cache = BufferCache(self.num_layers, len(prefix))
        self.model(
            input_ids=torch.tensor([prefix], device=self.device),
            **{self.cache_kwarg: cache},
            use_cache=True,
            logits_to_keep=1,
        )
        self._stats.add("prefill_tokens", len(prefix))
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _prefill_budget(self) -> int | None:
        """Prompt tokens per prefill forward: ``PREFILL_CHUNK_TOKENS`` on CPU, where large forwards spill out of
        cache; on accelerators, which want the largest forwards, what this call's memory plan allows."""
        return self._limits.prefill_tokens

    def _batches(self, ids: list[list[int]], extra: int = 0, max_tokens: int | None = None) -> list[list[int]]:
        """:func:`length_batches` of ``ids`` with this call's rows and (default) tokens per batch."""
        budget = max_tokens if max_tokens is not None else (self._limits.tokens or None)
        return length_batches([len(x) for x in ids], self._limits.rows, budget, extra)

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
        for rows, width in prefill_chunks(lens.tolist(), self._prefill_budget()):
            # this chunk's rows are at most ``width`` long: its leading ``slen - width`` positions are padding in
            # every row, left as zeros in the buffer and masked, so the chunk runs ``width`` tokens, not ``slen``
            cache = BufferCache(self.num_layers, capacity)
            if prefix_kv is not None and not apart:
                for layer, (k, v) in zip(cache.layers, prefix_kv, strict=True):
                    layer.fill_prefix(k, v, len(input_ids[rows]))
            cache.skip(slen - width)
            out = self.model(
                input_ids=input_ids[rows, slen - width :].to(self.device),
                attention_mask=mask[rows].to(self.device),
                position_ids=positions[rows, slen - width :].to(self.device),
                **{self.cache_kwarg: cache},
                use_cache=True,
                logits_to_keep=1,
                **model_kwargs,
                **self._layout_kwargs(offset, lens[rows].tolist(), offset + slen),
            )
            logits.append(out.logits[:, -1].float())  # stays on the device: sampling runs there
            self._stats.add("prefill_padding_tokens", width * (rows.stop - rows.start) - int(lens[rows].sum()))
            if keep_cache:
                caches.append(cache)
        cache = BufferCache.concat(caches) if keep_cache else None
        self._stats.add("prefill_tokens", int(lens.sum()))
        own_start = (offset + slen - lens).tolist()  # where each row's own tokens start in its buffer
        return torch.cat(logits), cache, mask, lens + plen, model_kwargs, (offset, own_start)

    def _layout_kwargs(self, copied_prefix: int, row_lengths: list[int], end: int) -> dict:
        """The ``prefill_layout`` keyword for the CPU attention (rows' tokens end at ``end``, after left padding)."""
        if not self.decode_attention:
            return {}
        return {"prefill_layout": PrefillLayout(copied_prefix, tuple(row_lengths), end)}

    def _decode_layout(self, own_start: list[int], copied_prefix: int, end: int) -> dict:
        """The ``decode_layout`` keyword for the CPU attention: key ranges per run of rows (sorted longest first)."""
        if not self.decode_attention:
            return {}
        return {"decode_layout": DecodeLayout.build(own_start, copied_prefix, end, self.dtype)}

    # ------------------------------------------------------------------ API

    @torch.inference_mode()
    def generate(self, prompts: list[str], sampling: Sampling, seed: int) -> list[Completion]:
        start = time.perf_counter()
        ids = self._tokenize(prompts)
        check_context(ids, self.context_length, room=1)
        seen: Counter[str] = Counter()
        generators = []
        for p in prompts:
            generators.append(torch.Generator().manual_seed(prompt_seed(seed, p, seen[p])))
            seen[p] += 1
        prefix = self._shared_prefix(ids)
        results: list[Completion | None] = [None] * len(prompts)
        with self._attention():
            prefix_kv = self._prefix_kv(prefix)
            self._plan_call([len(x) for x in ids], sampling.max_new_tokens)
            for batch in self._batches(ids, extra=sampling.max_new_tokens):
                suffixes = [ids[i][len(prefix) :] for i in batch]
                outs = self._decode(suffixes, [generators[i] for i in batch], sampling, prefix_kv, len(prefix))
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
        ended = [False] * bsz  # finished, or out of new tokens for the model's context
        room = [max_new] * bsz
        if self.context_length is not None:
            room = [min(max_new, self.context_length - plen - len(s)) for s in suffixes]
            self._stats.add("context_capped", sum(r < max_new for r in room))
        if max_new <= 0:
            return [(t, False) for t in tokens]
        first_room = min(max_new, KV_GROW_STEP)
        logits, cache, mask, positions, model_kwargs, (copied, own_start) = self._prefill(suffixes, prefix_kv, plen, first_room)
        # the positions each row's queries see (its mask's ones), kept on the host: no device read per step
        visible = (mask.sum(dim=1)).tolist()
        mask, positions = mask.to(self.device), positions.to(self.device)  # updated on the device from here on
        length = mask.shape[1] - first_room  # the filled part of the buffer
        room_left = max_new - first_room  # positions the buffer may still need to grow by
        alive = list(range(bsz))
        stop = torch.tensor(sorted(self.stop_ids), device=self.device)
        for step in range(max_new):
            if step < sampling.min_new_tokens:
                logits[:, stop] = float("-inf")
            nxt = sample_tokens(logits, sampling, [generators[r] for r in alive])
            keep = []
            for j, (row, tok) in enumerate(zip(alive, nxt.tolist(), strict=True)):  # the step's one host read
                if ended[row]:  # only when drop_finished is off: the row rides along, its tokens are ignored
                    continue
                tokens[row].append(tok)
                finished[row] = tok in self.stop_ids
                ended[row] = finished[row] or len(tokens[row]) >= room[row]
                if not ended[row]:
                    keep.append(j)
            if not keep or step == max_new - 1:
                break
            if self.drop_finished and len(keep) < len(alive):
                idx = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(idx)
                mask, positions, nxt = mask[idx], positions[idx], nxt[idx]
                alive = [alive[j] for j in keep]
                own_start = [own_start[j] for j in keep]
                visible = [visible[j] for j in keep]
            if length == mask.shape[1]:
                extra = min(KV_GROW_STEP, room_left)
                cache.grow(extra)
                mask = torch.nn.functional.pad(mask, (0, extra))
                room_left -= extra
            mask[:, length] = 1
            length += 1
            visible = [v + 1 for v in visible]
            layout = self._decode_layout(own_start, copied, length)
            out = self.model(
                input_ids=nxt.unsqueeze(-1),
                attention_mask=mask,
                position_ids=positions.unsqueeze(-1),
                **{self.cache_kwarg: cache},
                use_cache=True,
                **model_kwargs,
                **layout,
            )
            positions = positions + 1
            # positions attention read (without a layout: every row's whole buffer) and those it needed (unmasked)
            read = layout["decode_layout"].keys_read() if layout else mask.numel()
            self._stats.add("decode_steps", 1)
            self._stats.add("decode_kv_read", read)
            self._stats.add("decode_kv_needed", sum(visible))
            logits = out.logits[:, -1].float()
        return list(zip(tokens, finished, strict=True))

    @torch.inference_mode()
    def next_token_logprobs(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        start = time.perf_counter()
        cand_ids = single_token_ids(self.tokenizer, candidates)
        ids = self._tokenize(prompts)
        check_context(ids, self.context_length, room=0)
        prefix = self._shared_prefix(ids)
        results: list[list[float]] = [[] for _ in prompts]
        cand = torch.tensor(cand_ids, device=self.device)
        suffixes = [x[len(prefix) :] for x in ids]
        with self._attention():
            prefix_kv = self._prefix_kv(prefix)
            self._plan_call([len(x) for x in ids], 0)
            # no decoding follows, so batches need not be wide: one prefill chunk each, rows of similar length
            chunk = self._prefill_budget()
            budget = min(chunk, self.max_batch_tokens or chunk) if self.on_cpu else self._limits.tokens
            for batch in self._batches(suffixes, max_tokens=budget):
                logits, *_ = self._prefill([suffixes[i] for i in batch], prefix_kv, len(prefix), 0, keep_cache=False)
                logp = torch.log_softmax(logits, dim=-1)[:, cand]
                for i, row in zip(batch, logp.tolist(), strict=True):
                    results[i] = row
        self._stats.scored(ids, start)
        return results

    def stats(self) -> dict[str, Any]:
        return self._stats.as_dict()
