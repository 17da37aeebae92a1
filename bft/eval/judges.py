"""Offline ``fn_completions`` for alpaca_eval annotators.

alpaca_eval calls ``fn_completions(prompts=[...], **completions_kwargs)`` with prompts already rendered from its
annotator prompt template (here the AE2 ``weighted_alpaca_eval_gpt4_turbo`` ChatML template), and parses the
returned ``completions_all`` with its own ``logprob_parser`` (numerator ``m``, denominator ``m``/``M``). Both functions
below therefore returns OpenAI-style logprob records for the two choice tokens, so everything downstream (output
order randomisation, parsing, caching, metrics) is alpaca_eval's.

:func:`hf_logprob_completions`: a local Hugging Face causal LM; the probabilities of the tokens ``m`` and ``M`` as
the first assistant token (:func:`extract_pair` / :func:`swap_pair` read and exchange the two outputs of a prompt).
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from typing import Any

CHOICE_TOKENS = ("m", "M")  # "m" = output_1 of the prompt, "M" = output_2


def logprob_record(logprob_m: float, logprob_big_m: float) -> dict[str, Any]:
    """An OpenAI chat-completion choice carrying the two choice tokens, as ``logprob_parser`` reads it."""
    tops = [{"token": "m", "logprob": logprob_m}, {"token": "M", "logprob": logprob_big_m}]
    best = max(tops, key=lambda t: t["logprob"])
    return {
        "text": best["token"],
        "logprobs": {"content": [{"token": best["token"], "logprob": best["logprob"], "top_logprobs": tops}]},
    }


def _result(records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    n = max(len(records), 1)
    return {
        "completions": [r["text"] for r in records],
        "completions_all": records,
        "price_per_example": [0.0] * len(records),
        "time_per_example": [seconds / n] * len(records),
    }


# ---------------------------------------------------------------- the two outputs of an AE2 prompt

_OUT1_START = '"model_identifier": "m",\n        "output": """'
_OUT2_START = '"model_identifier": "M",\n        "output": """'
_OUT_END = '"""\n    }'


def extract_pair(prompt: str) -> tuple[str, str]:
    """The two outputs of an AE2 ``alpaca_eval_clf`` prompt, in prompt order (``m`` then ``M``)."""
    try:
        first = prompt.split(_OUT1_START, 1)[1]
        out_1, rest = first.rsplit(_OUT2_START, 1)
        out_1 = out_1.rsplit(_OUT_END, 1)[0]
        out_2 = rest.rsplit(_OUT_END, 1)[0]
    except (IndexError, ValueError) as e:
        raise ValueError("prompt is not an alpaca_eval_clf (AE2 weighted) prompt") from e
    return out_1, out_2


def swap_pair(prompt: str) -> str:
    """The same AE2 ``alpaca_eval_clf`` prompt with its two outputs exchanged (``m`` shows the old ``M`` output)."""
    extract_pair(prompt)  # validates the shape
    head, rest = prompt.split(_OUT1_START, 1)
    before_2, after_2 = rest.rsplit(_OUT2_START, 1)
    out_1, middle = before_2.rsplit(_OUT_END, 1)
    out_2, tail = after_2.rsplit(_OUT_END, 1)
    return head + _OUT1_START + out_2 + _OUT_END + middle + _OUT2_START + out_1 + _OUT_END + tail


def combine_orders(first: tuple[float, float], swapped: tuple[float, float]) -> dict[str, Any]:
    """One record from the two orders: P(output_1 wins) = mean of p(m) in the prompt order and p(M) swapped.

    Each argument is ``(logprob of m, logprob of M)``; each order is normalised over the two tokens first, so a judge
    that always answers ``m`` (pure position bias) comes out at exactly 0.5, a draw.
    """

    def p_first(lp_m: float, lp_big_m: float) -> float:
        top = max(lp_m, lp_big_m)
        a, b = math.exp(lp_m - top), math.exp(lp_big_m - top)
        return a / (a + b)

    p = 0.5 * (p_first(*first) + (1.0 - p_first(*swapped)))
    p = min(max(p, 1e-12), 1 - 1e-12)
    return logprob_record(math.log(p), math.log(1.0 - p))


# ---------------------------------------------------------------- local HF judge


@lru_cache(maxsize=2)
def _load_judge(model_name: str, dtype: str, adapter: str | None, device: str):
    from bft.models.registry import load_model

    return load_model(model_name, dtype=dtype, adapter=adapter, device=device)


def release_judges() -> None:
    """Drop the loaded judge models (kept between alpaca_eval's calls), so their memory, GPU memory included, is
    freed with the next collection (:func:`bft.pipeline.memory.release_memory`)."""
    _load_judge.cache_clear()


def _judge_batches(model, lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices of the prompts per forward: ``batch_size`` rows on CPU; on a GPU as many rows and tokens as the
    memory free now holds (:mod:`bft.generation.gpu_memory`), longest first."""
    from bft.generation.batching import length_batches

    param = next(model.parameters())
    if param.device.type == "cpu":
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]
    from bft.generation.gpu_memory import ModelShape, batch_limits, free_cuda_bytes

    limits = batch_limits(free_cuda_bytes(param.device), ModelShape.from_config(model.config), param.element_size(), lengths, 0)
    return length_batches(lengths, limits.rows, limits.tokens)


def choice_token_ids(tokenizer) -> tuple[int, int]:
    """Vocabulary ids of ``m`` and ``M`` as a first assistant token (each must be a single token)."""
    ids = []
    for token in CHOICE_TOKENS:
        encoded = tokenizer.encode(token, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"judge tokenizer splits the choice token {token!r} into {len(encoded)} tokens")
        ids.append(encoded[0])
    return ids[0], ids[1]


def render_judge_prompt(tokenizer, chatml_prompt: str) -> str:
    """alpaca_eval's ChatML prompt -> messages (its own converter) -> the judge's chat template."""
    from alpaca_eval.utils import prompt_to_chatml

    messages = prompt_to_chatml(chatml_prompt)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def hf_logprob_completions(
    prompts: list[str],
    model_name: str = "smollm2_135m",
    dtype: str = "auto",
    adapter: str | None = None,
    batch_size: int = 4,
    max_prompt_tokens: int | None = None,
    device: str = "auto",
    orders: int = 1,
    **_: Any,
) -> dict[str, Any]:
    """Judge with a local causal LM: log-probabilities of ``m`` / ``M`` as the next token after the prompt.

    ``orders=2`` also judges every pair with its outputs exchanged and combines the two (:func:`combine_orders`),
    which removes the judge's position bias at twice the cost.

    Prompts longer than the model's context (or ``max_prompt_tokens``) keep their last tokens: the task statement
    and the end of ``output_2`` survive, the system turn and the start of the prompt do not (logged in the result).
    """
    import torch

    from bft.config.machine import resolve_device
    from bft.generation.hf import sdpa_kernels

    start = time.perf_counter()
    loaded = _load_judge(model_name, dtype, adapter, resolve_device(device))
    model, tokenizer = loaded.model, loaded.tokenizer
    id_m, id_big_m = choice_token_ids(tokenizer)
    limit = max_prompt_tokens or getattr(model.config, "max_position_embeddings", 2048)
    if orders not in (1, 2):
        raise ValueError(f"judge orders must be 1 or 2, got {orders}")
    all_prompts = list(prompts) + ([swap_pair(p) for p in prompts] if orders == 2 else [])
    texts = [render_judge_prompt(tokenizer, p) for p in all_prompts]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"][-limit:] for t in texts]
    records: list[Any] = [None] * len(encoded)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    with torch.inference_mode(), sdpa_kernels(device):
        for idx in _judge_batches(model, [len(x) for x in encoded], batch_size):
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding: the next-token position is the last column
                ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device), logits_to_keep=1
            ).logits[:, -1, :]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, i in enumerate(idx):
                records[i] = (float(logprobs[row, id_m]), float(logprobs[row, id_big_m]))
    n = len(prompts)
    if orders == 2:
        combined = [combine_orders(records[i], records[n + i]) for i in range(n)]
    else:
        combined = [logprob_record(*records[i]) for i in range(n)]
    return _result(combined, time.perf_counter() - start)
