"""How many tokens of a document each generation prompt leaves room for, in the context of the model that runs it.

A document becomes three prompts on its way through the pipeline: the backtranslation prompt (backward model),
the rating prompt (curation model, with the generated instruction) and the rewrite prompt (rewriter, with the
instruction). Each must fit, with its new tokens, in its model's context (``max_position_embeddings``; vLLM:
``generation.max_model_len``), or the backend refuses it (:class:`bft.generation.base.PromptTooLongError`) or cuts
its completion. The corpus stage drops documents that would not fit (:class:`bft.data.corpus.context.ContextFilter`).

The document is the only variable part of a prompt (the instruction is bounded by the augment stage's
``max_new_tokens``), so each prompt is rendered ONCE, with the real template and chat template of its model, around
placeholders; its fixed pieces are counted once, and a document's prompt length is estimated as

    fixed pieces + tokens(document) + instruction budget + BOUNDARY_SLACK per placeholder side

which is an upper bound of the real count: tokenizing pieces apart can differ from tokenizing them joined only
around the joins (a merge across a join, a dummy-prefix space). ``tests/test_context_budget.py`` checks the bound
against fully rendered prompts on byte-level BPE (SmolLM2) and SentencePiece-style (Llama-2-like) tokenizers.
The instruction budget assumes the rating / rewrite model tokenizes an instruction in no more tokens than the
backward model generated it in (true when they share a tokenizer, as in both papers: Llama-2 in every role).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from bft.errors import BftError

DOC = "\ue001bft-document\ue001"
INSTRUCTION = "\ue002bft-instruction\ue002"
# Tokens one join between a fixed piece and a placeholder may add when tokenized joined instead of apart.
BOUNDARY_SLACK = 2


class ContextBudgetError(BftError, ValueError):
    """A prompt format whose document allowance cannot be computed (e.g. no room left for any document)."""


@dataclass(frozen=True)
class PromptSpec:
    """One generation prompt a corpus document goes into (plain values, read from the stage's config slice)."""

    kind: str  # augment | rate | rewrite
    model: str  # the role's base model name (its tokenizer and context)
    chat_template: str | None  # the role's chat_template setting
    template_key: str  # the config key naming that setting (for error messages)
    new_tokens: int  # max_new_tokens of the prompt's generation (1 for a logprob rating)
    instruction_tokens: int = 0  # the generated instruction's budget (0: no instruction in the prompt)
    score_only: bool = False  # rating prompt: logprob mode's "Score only" ask
    assistant_prefix: str = ""  # a prefill of the assistant turn ("Score: ", "[RES]")


@dataclass(frozen=True)
class PromptBudget:
    """A measured prompt: the most document tokens (of ``model``'s tokenizer) it leaves room for."""

    kind: str
    model: str
    context: int | None  # None: the model states no context length, nothing is checked (as in the backends)
    context_source: str
    fixed_tokens: int  # the rendered prompt without document and instruction
    instruction_tokens: int
    slack_tokens: int
    new_tokens: int
    max_document_tokens: int | None  # None when context is None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def user_text(spec: PromptSpec, document: str, instruction: str) -> str:
    """The user turn of ``spec``'s prompt for this document and instruction (the pipeline's own prompt builders)."""
    from bft.prompts import backtranslation_prompt, rating_prompt, rewrite_prompt

    if spec.kind == "augment":
        return backtranslation_prompt(document)
    if spec.kind == "rate":
        return rating_prompt(instruction, document, score_only=spec.score_only)
    if spec.kind == "rewrite":
        return rewrite_prompt(instruction, document)
    raise ValueError(f"unknown prompt kind {spec.kind!r} (augment | rate | rewrite)")


def render(spec: PromptSpec, tokenizer, document: str, instruction: str = "") -> str:
    """The full prompt string the generation stage passes to the backend."""
    from bft.prompts import render_chat

    return render_chat(tokenizer, user_text(spec, document, instruction), assistant_prefix=spec.assistant_prefix)[0]


def fixed_pieces(spec: PromptSpec, tokenizer) -> list[str]:
    """The rendered prompt split at its placeholders: the text around the document (and instruction)."""
    prompt = render(spec, tokenizer, DOC, INSTRUCTION)
    expected = {DOC: 1, INSTRUCTION: 0 if spec.kind == "augment" else 1}
    for placeholder, n in expected.items():
        if prompt.count(placeholder) != n:
            raise ContextBudgetError(
                f"{spec.template_key}: the chat template of '{spec.model}' renders the {spec.kind} prompt's content "
                f"{prompt.count(placeholder)} times (expected {n}); cannot budget its context"
            )
    return re.split(f"{re.escape(DOC)}|{re.escape(INSTRUCTION)}", prompt)


def count_tokens(tokenizer, texts: list[str]) -> list[int]:
    """Token counts as the backends tokenize prompts (no special tokens added), in one batched call."""
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]]


def model_context(model: str, backend: str, max_model_len: int | None) -> tuple[int | None, str]:
    """(context, where it comes from): ``generation.max_model_len`` when set for vLLM or a server (what it was
    started with), else the model's ``max_position_embeddings`` (what the hf backend and vLLM's default use)."""
    if backend in ("vllm", "served") and max_model_len is not None:
        return int(max_model_len), "generation.max_model_len"
    from transformers import AutoConfig

    from bft.models.registry import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(model))
    value = getattr(config.get_text_config(decoder=True), "max_position_embeddings", None)
    return (int(value) if value else None), "max_position_embeddings"


def load_role_tokenizer(spec: PromptSpec):
    """The tokenizer of the spec's model with the role's chat template (as the generation backend renders); shared
    with the process's other callers (:func:`bft.models.registry.load_tokenizer`): not to be changed."""
    from bft.models.registry import load_tokenizer

    return load_tokenizer(spec.model, spec.chat_template, spec.template_key)


def measure(spec: PromptSpec, backend: str, max_model_len: int | None, tokenizer=None) -> PromptBudget:
    """The prompt's fixed tokens and the document tokens it leaves room for in its model's context."""
    tokenizer = tokenizer if tokenizer is not None else load_role_tokenizer(spec)
    return budget_for(spec, tokenizer, *model_context(spec.model, backend, max_model_len))


def budget_for(spec: PromptSpec, tokenizer, context: int | None, source: str = "max_position_embeddings") -> PromptBudget:
    """:func:`measure` for a given tokenizer (with the role's chat template) and context."""
    pieces = fixed_pieces(spec, tokenizer)
    fixed = sum(count_tokens(tokenizer, [p for p in pieces if p]))
    slack = BOUNDARY_SLACK * 2 * (len(pieces) - 1)
    allowance = None
    if context is not None:
        allowance = context - fixed - spec.instruction_tokens - slack - spec.new_tokens
        if allowance < 1:
            raise ContextBudgetError(
                f"the {spec.kind} prompt of '{spec.model}' ({fixed} tokens + {spec.instruction_tokens} for the "
                f"instruction + {spec.new_tokens} new) leaves no room for a document in its context of {context} "
                f"tokens ({source})"
            )
    return PromptBudget(spec.kind, spec.model, context, source, fixed, spec.instruction_tokens, slack, spec.new_tokens, allowance)


def estimate(budget: PromptBudget, document_tokens: int) -> int:
    """Upper bound of the prompt's tokens for a document of ``document_tokens`` tokens (instruction at its budget)."""
    return budget.fixed_tokens + budget.instruction_tokens + budget.slack_tokens + document_tokens


def prompt_budgets(specs: list[PromptSpec], backend: str, max_model_len: int | None) -> list[PromptBudget]:
    """Measure every prompt (each role's tokenizer loaded once)."""
    tokenizers: dict[tuple[str, str | None], Any] = {}
    budgets = []
    for spec in specs:
        key = (spec.model, spec.chat_template)
        if key not in tokenizers:
            tokenizers[key] = load_role_tokenizer(spec)
        budgets.append(measure(spec, backend, max_model_len, tokenizers[key]))
    return budgets
