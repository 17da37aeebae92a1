"""Every role's chat template, registered and checked once before any work (a model with no template and no
``chat_template`` setting fails here, in one line naming the key, rather than after hours of work)."""

from __future__ import annotations

from typing import Any

from bft.models.chat_templates import clear_registered_templates, register_chat_template
from bft.models.registry import load_tokenizer


def model_roles(cfg: Any) -> list[tuple[str, str | None, str]]:
    """(model name, chat_template setting, config key) of every role that loads a pretrained model by name:
    the base ``model``, the per-role ``backward_model`` / ``curation_model`` / ``final_model`` (null = ``model``)
    and a rewriter with ``rewriter.source=model``."""
    roles = [(cfg.model.name, cfg.model.get("chat_template"), "model.chat_template")]
    for role in ("backward_model", "curation_model", "final_model"):
        node = cfg.get(role)
        if node is not None and node.get("name") is not None:
            roles.append((node.name, node.get("chat_template"), f"{role}.chat_template"))
    rewriter = cfg.get("rewriter")
    if rewriter is not None:
        from bft.rewriter.source import rewriter_source

        source = rewriter_source(cfg)
        if source.kind == "model":
            roles.append((source.model, rewriter.get("chat_template"), "rewriter.chat_template"))
    return roles


def configure_chat_templates(cfg: Any, check: bool = True) -> None:
    """Register every role's setting and, with ``check``, load each tokenizer once so a model without a template
    and without a setting fails now, in one line naming the key, rather than after hours of work."""
    clear_registered_templates()
    roles = model_roles(cfg)
    for name, setting, key in roles:
        register_chat_template(name, setting, key)
    if check:
        for name, _, _ in roles:
            load_tokenizer(name)
