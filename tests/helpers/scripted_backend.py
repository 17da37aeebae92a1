"""TEST-ONLY generation backend: shaped completions for the pipeline's real prompts, within the real limits.

A random tiny model cannot write a rating, a rewrite or an answer, so tests patch this class over the generation
backend factory that ``bft.pipeline.models.backend_for`` calls (nothing in ``bft`` or the CLI can select it). It
keeps the limits of the backends it replaces, measured with the role's real tokenizer:

* a prompt past the model's context (``max_position_embeddings``; vLLM: ``generation.max_model_len``) raises the
  same :class:`bft.generation.base.PromptTooLongError`, through the same ``check_context``;
* a completion longer than ``max_new_tokens`` (or than the context leaves) is cut there and comes back
  ``finished=False``, as a real backend returns a generation that hit its limit;
* every call records, per prompt, its real token count, the new tokens asked for and the context, so a test can
  check that no prompt was left less room than it asked for (``ScriptedBackend.calls``).

Completions by prompt kind (a hash of the prompt picks the variant): backtranslations are short questions, or for
some documents a rambling one that runs past a small ``max_new_tokens``; ratings are ``Score: 5``, ``Score: 3``,
no score, or a long reasoning that runs out of tokens; rewrites are ``[RES]...[/RES]`` or an overlong one cut
before ``[/RES]``; anything else is an answer.
"""

from __future__ import annotations

import zlib
from typing import Any


def prompt_tag(prompt: str) -> int:
    return zlib.crc32(prompt.encode())


def prompt_kind(prompt: str) -> str:
    if "Write the most likely question" in prompt:
        return "backtranslate"
    if "Please assign a score using the following 5-point scale" in prompt:
        return "rate"
    if "Given the draft response to the provided question below" in prompt:
        return "rewrite"
    return "answer"


LONG_WORDS = " ".join(f"detail{k}" for k in range(400))


def scripted_text(prompt: str) -> str:
    """The whole completion the script would write for ``prompt`` (before any token limit)."""
    kind, tag = prompt_kind(prompt), prompt_tag(prompt)
    if kind == "backtranslate":
        if tag % 7 == 3:
            return f"What should a reader know about {LONG_WORDS}?"
        return f"What should a reader know about topic {tag % 100003}?"
    if kind == "rate":
        verdicts = ["Complete, focused and helpful.\nScore: 5", "Helpful but written as a blog post.\nScore: 3"]
        verdicts += ["Complete and well organised.\nScore: 5", "It reads well, I would keep it."]
        verdicts += [f"The answer covers {LONG_WORDS}.\nScore: 5"]
        return verdicts[tag % 5]
    if kind == "rewrite":
        if tag % 5 == 0:
            return f"[RES]A rewritten answer that goes on about {LONG_WORDS}[/RES]"
        return f"Here it is.\n[RES]A rewritten, focused answer number {tag}.[/RES]"
    return f"A helpful answer ({tag}) written by the assistant."


class ScriptedBackend:
    """Built as ``make_backend(gen_cfg, model_name, adapter)`` is; see the module docstring."""

    built: list[dict[str, Any]] = []  # every backend the pipeline asked for, in order
    prompts: dict[str, list[str]] = {}  # kind -> rendered prompts received
    calls: list[dict[str, Any]] = []  # per prompt: kind, prompt_tokens, max_new_tokens, context, finished

    @classmethod
    def reset(cls) -> None:
        cls.built, cls.prompts, cls.calls = [], {}, []

    def __init__(self, gen_cfg, model_name: str, adapter: str | None = None) -> None:
        from transformers import AutoConfig

        from bft.models.registry import load_tokenizer, resolve_model_path

        self.tokenizer = load_tokenizer(model_name)  # the real tokenizer and prompt format of this role
        config = AutoConfig.from_pretrained(resolve_model_path(model_name)).get_text_config(decoder=True)
        self.context_length = config.max_position_embeddings
        self.context_source = "max_position_embeddings"
        if gen_cfg.backend == "vllm" and gen_cfg.get("max_model_len") is not None:
            self.context_length, self.context_source = int(gen_cfg.max_model_len), "vLLM max_model_len"
        self.counts: dict[str, float] = {"new_tokens": 0, "sequences": 0}
        ScriptedBackend.built.append({"backend": gen_cfg.backend, "model": model_name, "adapter": adapter})

    def _ids(self, prompts: list[str]) -> list[list[int]]:
        return self.tokenizer(prompts, add_special_tokens=False)["input_ids"]

    def generate(self, prompts, sampling, seed):
        from bft.generation.base import Completion, check_context

        ids = self._ids(prompts)
        check_context(ids, self.context_length, room=1, source=self.context_source)
        out = []
        for prompt, prompt_ids in zip(prompts, ids, strict=True):
            kind = prompt_kind(prompt)
            ScriptedBackend.prompts.setdefault(kind, []).append(prompt)
            limit = min(sampling.max_new_tokens, self.context_length - len(prompt_ids))
            tokens = self.tokenizer(scripted_text(prompt), add_special_tokens=False)["input_ids"]
            finished = len(tokens) + 1 <= limit  # the text and its end-of-turn token fit
            body = tokens if finished else tokens[:limit]
            text = self.tokenizer.decode(body, skip_special_tokens=True)
            out.append(Completion(text, len(prompt_ids), len(body) + int(finished), finished))
            ScriptedBackend.calls.append(
                {"kind": kind, "prompt_tokens": len(prompt_ids), "max_new_tokens": sampling.max_new_tokens}
                | {"context": self.context_length, "finished": finished}
            )
        self.counts["sequences"] += len(out)
        self.counts["new_tokens"] += sum(c.new_tokens for c in out)
        return out

    def next_token_logprobs(self, prompts, candidates):
        raise AssertionError("the paper experiments rate in generate mode; next_token_logprobs must not be called")

    def stats(self) -> dict[str, Any]:
        return dict(self.counts)
