"""Seeded token sampling for the generation backends: per-prompt seeds, greedy, temperature and top-p.

Every prompt gets its own ``torch.Generator`` seeded from :func:`prompt_seed`; one uniform draw per generated
token picks the token by inverse CDF, so a prompt's random stream depends only on (seed, prompt, occurrence).
"""

from __future__ import annotations

import hashlib

import torch

from bft.generation.base import Sampling

NUCLEUS_TOPK = 64


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
    """Pick one token per row of float32 ``logits`` (B, V); row i draws its uniform from ``generators[i]``.

    The generators are CPU ones (the random stream of a prompt does not depend on the device); on an accelerator
    the draws are copied over and the pick runs there, without a host synchronisation: every row goes through
    the full sort (the top-64 shortcut below needs the host to choose rows), which picks the same tokens."""
    if sampling.greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    u = torch.cat([torch.rand(1, generator=g) for g in generators]).to(probs.device, non_blocking=True)
    if sampling.top_p >= 1.0:
        return _inverse_cdf(probs, u)
    if probs.device.type != "cpu":
        return nucleus_by_sort(probs, u, sampling.top_p)
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
        out[rows] = nucleus_by_sort(probs[rows], u[rows], sampling.top_p)
    return out


def nucleus_by_sort(probs: torch.Tensor, u: torch.Tensor, top_p: float) -> torch.Tensor:
    """The top-p pick of each row of ``probs`` with uniform ``u``, through a full descending sort of the row."""
    sorted_probs, sorted_idx = probs.sort(dim=-1, descending=True)
    pick = _inverse_cdf(_nucleus(sorted_probs, top_p), u)
    return sorted_idx.gather(1, pick.unsqueeze(-1)).squeeze(-1)


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
