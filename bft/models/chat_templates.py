"""Prompt formats: the ``chat_template`` setting of a model role, turned into the Jinja template its tokenizer uses.

A setting is one of
- ``model`` (or unset): the template the model's tokenizer ships (``tokenizer_config.json`` / ``chat_template.jinja``);
- a named format of :data:`NAMED_TEMPLATES`: ``llama2_inst`` (``<s>[INST] user [/INST] assistant </s>``, the format
  both papers trained and sampled Llama-2 with; base Llama-2 ships no template) or ``chatml``;
- a path to a ``.jinja`` file.

The chosen template is set on the tokenizer object (:func:`apply_chat_template_setting`), so the one rendering
function, :func:`bft.prompts.render_chat`, formats training examples and inference prompts of every role alike,
and a trained model saves the template with its tokenizer. The pipeline registers each role's setting by model
name once, before any work (:func:`configure_chat_templates`); :func:`bft.models.registry.load_tokenizer` applies it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bft.errors import ConfigError

MODEL_TEMPLATE = "model"

# Llama-2's chat format as Meta's reference code builds it: "<s>[INST] {user} [/INST] {assistant} </s>".
# The generation prompt ends at "[/INST]"; the assistant turn starts with a space (so its first token is "▁word",
# as in Meta's training data) and ends with " </s>". A system message goes inside the first [INST] in <<SYS>> tags.
LLAMA2_INST = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = '<<SYS>>\\n' + messages[0]['content'].strip() + '\\n<</SYS>>\\n\\n' -%}"
    "{%- set messages = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ bos_token + '[INST] ' + (system if loop.first else '') + message['content'].strip() + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ ' ' + message['content'].strip() + ' ' + eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

CHATML = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

NAMED_TEMPLATES: dict[str, str] = {"llama2_inst": LLAMA2_INST, "chatml": CHATML}

# model name -> (setting, config key naming it), filled by configure_chat_templates
_settings: dict[str, tuple[str, str]] = {}


def template_text(setting: str | None, key: str = "model.chat_template") -> str | None:
    """The Jinja text of a setting; ``None`` for the model's own template. Raises ConfigError naming ``key``."""
    if setting in (None, "", MODEL_TEMPLATE):
        return None
    if setting in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[setting]
    path = Path(setting).expanduser()
    if path.suffix in (".jinja", ".j2") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{key}={setting!r}: no such Jinja file")
        return path.read_text(encoding="utf-8")
    raise ConfigError(f"{key}={setting!r} is not one of {', '.join([MODEL_TEMPLATE, *NAMED_TEMPLATES])} or a path to a .jinja file")


def apply_chat_template_setting(tokenizer: Any, name: str, setting: str | None, key: str = "model.chat_template") -> Any:
    """Set the template of ``setting`` on ``tokenizer``; fail in one line naming ``key`` when none results."""
    text = template_text(setting, key)
    if text is not None:
        tokenizer.chat_template = text
    elif not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"{key}: model '{name}' ships no chat template; set {key} to one of "
            f"{', '.join(NAMED_TEMPLATES)} or a .jinja file (base Llama-2: llama2_inst)"
        )
    return tokenizer


def register_chat_template(name: str, setting: str | None, key: str) -> None:
    """Use ``setting`` whenever ``load_tokenizer(name)`` is called without an explicit one."""
    template_text(setting, key)  # a bad name or a missing file fails here, before any work
    previous = _settings.get(name)
    if previous is not None and template_text(previous[0], previous[1]) != template_text(setting, key):
        raise ConfigError(f"{key}={setting!r} differs from {previous[1]}={previous[0]!r} for the same model '{name}'")
    _settings[name] = (setting or MODEL_TEMPLATE, key)


def registered_setting(name: str) -> tuple[str | None, str]:
    """(setting, config key) registered for ``name``; (None, ``model.chat_template``) when none was."""
    return _settings.get(name, (None, "model.chat_template"))


def clear_registered_templates() -> None:
    _settings.clear()
