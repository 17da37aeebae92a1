"""A served judge behind an OpenAI-compatible base URL (a local vLLM server, for one), through alpaca_eval.

``annotator=openai_compatible`` + ``judge_url`` (the base URL, e.g. ``http://127.0.0.1:8000/v1``) + ``judge_model``
(the served model name) + optional ``judge_api_key_env`` (the NAME of the environment variable holding the key; the
key itself is never written anywhere) + ``judge_api_scheme`` (the alpaca_eval annotator whose prompt and parser are
used; default the AE2 weighted ``weighted_alpaca_eval_gpt4_turbo``; any annotator whose decoder is
``openai_completions``).

The judging runs through alpaca_eval's own decoder (``alpaca_eval.decoders.openai.openai_completions``), pointed at
the URL with alpaca_eval's client-config mechanism: a ``client_configs.yaml`` written into the run folder
names :class:`bft.eval.endpoint_client.EnvKeyOpenAI` as ``client_class`` with the base URL and the key's variable
name. With the weighted scheme,
``judge_orders=2`` also judges every pair with its outputs exchanged and combines the two, like the local judge.
"""

from __future__ import annotations

import math
import os
import typing
from dataclasses import dataclass
from typing import Any

from bft.errors import BftError

ENDPOINT = "openai_compatible"
NO_KEY = "EMPTY"  # what a keyless server (vLLM without --api-key) is sent
PROBE_TIMEOUT_S = 5.0


class EndpointError(BftError, ValueError):
    """A served judge that cannot be used; one line saying what to do."""


@dataclass(frozen=True)
class Endpoint:
    """A served judge: base URL, served model name, the key's variable name, the alpaca_eval scheme."""

    url: str
    model: str
    key_env: str | None = None
    scheme: str = "weighted_alpaca_eval_gpt4_turbo"

    def api_key(self) -> str:
        if not self.key_env:
            return NO_KEY
        key = os.environ.get(self.key_env)
        if not key:
            raise EndpointError(f"annotator '{ENDPOINT}': judge_api_key_env={self.key_env} is not set in the environment")
        return key

    def provenance(self) -> dict[str, Any]:
        return {"judge_url": self.url, "judge_model": self.model, "judge_api_key_env": self.key_env, "scheme": self.scheme}


def endpoint_from(url: str | None, model: str | None, key_env: str | None = None, scheme: str | None = None) -> Endpoint:
    """Validate the settings of ``annotator=openai_compatible`` (no network)."""
    if not url:
        raise EndpointError(f"annotator '{ENDPOINT}' needs judge_url=<base URL, e.g. http://127.0.0.1:8000/v1>")
    if not url.startswith(("http://", "https://")):
        raise EndpointError(f"judge_url must start with http:// or https://, got '{url}'")
    if not model:
        raise EndpointError(f"annotator '{ENDPOINT}' needs judge_model=<the model name the server serves>")
    return Endpoint(url.rstrip("/"), model, key_env or None, scheme or Endpoint.scheme)


def endpoint_for(
    annotator: str, url: str | None, model: str | None, key_env: str | None = None, scheme: str | None = None
) -> Endpoint | None:
    """The served judge of a config's ``eval`` settings: None unless ``annotator=openai_compatible``, whose settings
    are refused with any other annotator (they would do nothing)."""
    if annotator != ENDPOINT:
        if url or key_env:
            which = "eval.judge_url" if url else "eval.judge_api_key_env"
            raise EndpointError(f"{which} is set but eval.annotator={annotator}: use eval.annotator={ENDPOINT}")
        return None
    return endpoint_from(url, model, key_env, scheme)


def check_endpoint(ep: Endpoint, needs_logprobs: bool = False) -> None:
    """Fail now, in one line, if the key is missing, the server does not answer, or does not serve the model; with
    ``needs_logprobs`` (a weighted scheme reads the m/M logprobs), also if its chat answers carry none."""
    import openai

    client = openai.OpenAI(base_url=ep.url, api_key=ep.api_key(), timeout=PROBE_TIMEOUT_S, max_retries=0)
    try:
        served = [m.id for m in client.models.list()]
    except openai.NotFoundError:
        return  # a server without /models: nothing more to check before judging
    except openai.APIConnectionError as e:
        why = type(e.__cause__ or e).__name__
        raise EndpointError(f"judge_url={ep.url} is unreachable ({why}): start the server or fix the URL") from e
    except openai.AuthenticationError as e:
        source = f"from {ep.key_env}" if ep.key_env else "(no judge_api_key_env set)"
        raise EndpointError(f"judge_url={ep.url} refused the key {source}: 401") from e
    except openai.APIStatusError as e:
        raise EndpointError(f"judge_url={ep.url} answered {e.status_code} to GET /models") from e
    if served and ep.model not in served:
        raise EndpointError(f"judge_url={ep.url} does not serve judge_model={ep.model} (it serves: {', '.join(served[:5])})")
    if needs_logprobs:
        messages = [{"role": "user", "content": "Answer m or M."}]
        try:
            answer = client.chat.completions.create(model=ep.model, messages=messages, max_tokens=1, logprobs=True, top_logprobs=5)
        except openai.APIError as e:
            raise EndpointError(f"judge_url={ep.url} refused a one-token chat request: {e}") from e
        content = answer.choices[0].logprobs.content if answer.choices and answer.choices[0].logprobs else None
        if not content or not content[0].top_logprobs:
            raise EndpointError(
                f"judge_url={ep.url} answers without logprobs, which judge_api_scheme={ep.scheme} reads: serve the judge "
                "with vLLM or SGLang, or pick a scheme that parses text (judge_api_scheme=alpaca_eval_gpt4, judge_orders=1)"
            )


def _choice_logprobs(record: dict[str, Any]) -> tuple[float, float] | None:
    """``(logprob of m, logprob of M)`` of the first token of a chat choice; a token absent from the top list gets
    -inf (both absent: None)."""
    try:
        tops = record["logprobs"]["content"][0]["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        return None
    found = {t["token"]: float(t["logprob"]) for t in tops if t.get("token") in ("m", "M")}
    if not found:
        return None
    return found.get("m", -math.inf), found.get("M", -math.inf)


def combine_records(first: dict[str, Any], swapped: dict[str, Any]) -> dict[str, Any]:
    """One logprob record from a pair judged in both orders (one order only where the other has no m/M token)."""
    from bft.eval.judges import combine_orders, logprob_record

    a, b = _choice_logprobs(first), _choice_logprobs(swapped)
    if a is not None and b is not None:
        return combine_orders(a, b)
    if a is None and b is None:
        return first  # alpaca_eval's parser reports it as unparsable
    if a is None:
        lp_m, lp_big_m = b  # the swapped order: its m is the prompt's M
        return logprob_record(lp_big_m, lp_m)
    return logprob_record(*a)


def build_response_models(root: type | None = None) -> int:
    """Build the pydantic schema of every model class a chat completion response reaches, in this thread.

    openai defines its response models with ``defer_build``: each class builds its schema the first time a response
    is parsed into it. alpaca_eval parses responses in a thread pool, and two threads building one class at once can
    see it half-built (``PydanticUserError: ... BaseModel cannot be instantiated directly``). Building them all here
    first leaves the threads nothing to build. Returns how many classes were visited."""
    from openai import BaseModel

    if root is None:
        from openai.types.chat import ChatCompletion as root
    seen: set[type] = set()
    todo: list[Any] = [root]
    while todo:
        hint = todo.pop()
        if isinstance(hint, type) and issubclass(hint, BaseModel):
            if hint in seen:
                continue
            seen.add(hint)
            hint.model_rebuild()
            todo.extend(field.annotation for field in hint.model_fields.values())
        else:
            todo.extend(typing.get_args(hint))
    return len(seen)


def endpoint_completions(prompts: list[str], orders: int = 1, **openai_kwargs: Any) -> dict[str, Any]:
    """``fn_completions`` for the served judge: alpaca_eval's ``openai_completions``; with ``orders=2`` every prompt
    also goes out with its outputs exchanged and the two answers are combined (:func:`combine_records`)."""
    from alpaca_eval.decoders.openai import openai_completions

    from bft.eval.judges import swap_pair

    build_response_models()
    if orders == 1:
        return openai_completions(list(prompts), **openai_kwargs)
    n = len(prompts)
    out = openai_completions([*prompts, *(swap_pair(p) for p in prompts)], **openai_kwargs)
    records = out["completions_all"]
    combined = [combine_records(records[i], records[n + i]) for i in range(n)]
    return {
        "completions": [r.get("text", "") for r in combined],
        "completions_all": combined,
        "price_per_example": [out["price_per_example"][i] + out["price_per_example"][n + i] for i in range(n)],
        "time_per_example": [out["time_per_example"][i] + out["time_per_example"][n + i] for i in range(n)],
    }
