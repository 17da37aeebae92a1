"""The corpus stage's last filter: drop a document whose longest prompt would not fit its model's context.

Each :class:`bft.context_budget.PromptBudget` says how many tokens of its model's tokenizer a document may have
(the prompt's fixed tokens, the instruction's budget and the new tokens taken from the context). The filter counts
each document's tokens once per distinct tokenizer, in batches, and drops it with the reason
``too_long_for_<kind>`` (``augment``, ``rate``, ``rewrite``) of the first prompt it would overflow, tightest first.
"""

from __future__ import annotations

from typing import Any

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from bft.context_budget import PromptBudget, count_tokens

BATCH = 64


class ContextFilter(BaseFilter):
    """Keep documents that fit every prompt of ``budgets`` (budgets with an unknown context check nothing)."""

    name = "context budget"

    def __init__(self, budgets: list[PromptBudget], exclusion_writer: Any = None, batch_size: int = BATCH) -> None:
        super().__init__(exclusion_writer, batch_size=batch_size)
        checked = [b for b in budgets if b.max_document_tokens is not None]
        self.budgets = sorted(checked, key=lambda b: b.max_document_tokens)
        self.models = list(dict.fromkeys(b.model for b in self.budgets))
        self._tokenizers: dict[str, Any] = {}

    def _tokenizer(self, model: str) -> Any:
        if model not in self._tokenizers:
            from bft.models.registry import load_plain_tokenizer, resolve_model_path

            self._tokenizers[model] = load_plain_tokenizer(resolve_model_path(model))
        return self._tokenizers[model]

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        texts = [doc.text.strip() for doc in batch]  # the prompt builders strip the document
        tokens = {model: count_tokens(self._tokenizer(model), texts) for model in self.models}
        results: list[bool | tuple[bool, str]] = []
        for i in range(len(batch)):
            over = next((b for b in self.budgets if tokens[b.model][i] > b.max_document_tokens), None)
            results.append(True if over is None else (False, f"too_long_for_{over.kind}"))
        return results
