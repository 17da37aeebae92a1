"""Annotator names -> alpaca_eval annotator configs, and a fail-fast readiness check.

- any alpaca_eval annotator config name (``alpaca_eval_gpt4``, ``weighted_alpaca_eval_gpt4_turbo``, ...) or a path to
  an annotator config folder / ``configs.yaml``: used as is (API judges need their key in the environment).
- ``local``: a local Hugging Face model (default ``smollm2_135m``; any registry name, folder, hub id, plus an optional
  PEFT adapter) judging with the AE2 weighted scheme: alpaca_eval's ``weighted_alpaca_eval_gpt4_turbo`` prompt
  template and ``logprob_parser`` on the tokens ``m`` / ``M``; the completions come from
  :func:`bft.eval.judges.hf_logprob_completions`.
- ``openai_compatible``: a served judge behind an OpenAI-compatible base URL (``judge_url``, ``judge_model``,
  ``judge_api_key_env``, ``judge_api_scheme``), through alpaca_eval's OpenAI decoder: see :mod:`bft.eval.endpoint`.

Custom judges are wired through alpaca_eval's own hook: a ``configs.yaml`` written into the run folder (prompt
template, parser, batch size copied from the AE2 config) plus the ``fn_completions`` / ``completions_kwargs`` keyword
arguments that ``alpaca_eval.evaluate`` forwards to every ``SingleAnnotator``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bft.errors import BftError
from bft.eval.endpoint import ENDPOINT, EndpointError, check_endpoint, endpoint_completions

if TYPE_CHECKING:
    from bft.eval.endpoint import Endpoint

LOCAL = "local"
AE2_WEIGHTED = "weighted_alpaca_eval_gpt4_turbo"

# fn_completions of alpaca_eval's decoders -> environment variables of which at least one must be set.
ENV_KEYS: dict[str, tuple[str, ...]] = {
    "openai_completions": ("OPENAI_API_KEY", "OPENAI_API_KEYS", "OPENAI_CLIENT_CONFIG_PATH"),
    "anthropic_completions": ("ANTHROPIC_API_KEY",),
    "google_completions": ("GOOGLE_API_KEY",),
    "cohere_completions": ("COHERE_API_KEY",),
    "huggingface_api_completions": ("HUGGINGFACEHUB_API_TOKEN",),
    "replicate_completions": ("REPLICATE_API_TOKEN",),
    "jina_chat_completions": ("JINA_CHAT_API_KEY",),
    "bedrock_anthropic_completions": ("AWS_ACCESS_KEY_ID", "AWS_PROFILE"),
}


class AnnotatorError(BftError, ValueError):
    """An annotator that cannot be used; the message is one line and says what to do."""


class AnnotatorNotReadyError(AnnotatorError):
    """An API annotator whose key is missing from the environment."""


def alpaca_eval_configs_dir() -> Path:
    """alpaca_eval's ``evaluators_configs`` folder, found without importing the (slow) package."""
    spec = importlib.util.find_spec("alpaca_eval")
    if spec is None or not spec.submodule_search_locations:
        raise AnnotatorError("alpaca_eval is not installed: pip install alpaca-eval==0.6.6 'setuptools<81'")
    return Path(list(spec.submodule_search_locations)[0]) / "evaluators_configs"


def list_alpaca_eval_annotators() -> list[str]:
    root = alpaca_eval_configs_dir()
    return sorted(p.parent.name for p in root.glob("*/configs.yaml"))


def annotator_config_path(name: str) -> Path:
    """The ``configs.yaml`` of an alpaca_eval annotator name, or of a user folder / file path."""
    candidate = Path(name).expanduser()
    if candidate.is_dir() and (candidate / "configs.yaml").is_file():
        return (candidate / "configs.yaml").resolve()
    if candidate.is_file() and candidate.suffix in (".yaml", ".yml"):
        return candidate.resolve()
    path = alpaca_eval_configs_dir() / name / "configs.yaml"
    if "/" in name or not path.is_file():
        raise AnnotatorError(
            f"unknown annotator '{name}': use '{LOCAL}', 'openai_compatible' (judge_url=...), an alpaca_eval annotator config name "
            f"(e.g. alpaca_eval_gpt4, {AE2_WEIGHTED}) or a path to an annotator configs.yaml"
        )
    return path


def load_annotator_config(name: str) -> dict[str, dict[str, Any]]:
    configs = yaml.safe_load(annotator_config_path(name).read_text())
    if not isinstance(configs, dict) or not all(isinstance(v, dict) for v in configs.values()):
        raise AnnotatorError(f"annotator '{name}': its configs.yaml is not a mapping of annotator -> settings")
    return configs


def missing_env_keys(name: str) -> list[str]:
    """For each API decoder of the annotator whose keys are all absent, the key to ask for."""
    missing = []
    for settings in load_annotator_config(name).values():
        wanted = ENV_KEYS.get(str(settings.get("fn_completions", "")))
        if wanted and not any(os.environ.get(k) for k in wanted) and wanted[0] not in missing:
            missing.append(wanted[0])
    return missing


def check_annotator_ready(name: str, endpoint: Endpoint | None = None) -> None:
    """Raise a one-line :class:`AnnotatorError` now if ``name`` cannot judge (call before any generation).

    For ``openai_compatible``, ``endpoint`` is required: its key variable must be set and its server must answer."""
    if name == LOCAL:
        return
    if name == ENDPOINT:
        if endpoint is None:
            raise AnnotatorError(f"annotator '{ENDPOINT}' needs judge_url and judge_model")
        try:
            check_endpoint(endpoint, needs_logprobs=is_weighted(scheme_settings(endpoint.scheme)))
        except EndpointError as e:
            raise AnnotatorNotReadyError(str(e)) from e
        return
    missing = missing_env_keys(name)
    if missing:
        raise AnnotatorNotReadyError(f"annotator '{name}' needs {' and '.join(missing)} in the environment")


@dataclass
class ResolvedAnnotator:
    """What ``alpaca_eval.evaluate`` needs: a config path plus kwargs it forwards to each ``SingleAnnotator``."""

    name: str  # as requested
    annotators_config: str  # absolute path to a configs.yaml
    annotator_kwargs: dict[str, Any] = field(default_factory=dict)
    judge: str = ""  # the judging model, for provenance
    settings: dict[str, Any] = field(default_factory=dict)  # decoding / scheme settings, for provenance


def slug(text: str, max_len: int = 40) -> str:
    """A filesystem- and cache-key-safe short name; a hash suffix keeps different long names apart."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.")
    if len(clean) <= max_len and clean == text:
        return clean
    return f"{clean[: max_len - 9]}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def local_judge_id(judge_model: str, judge_adapter: str | None = None, judge_orders: int = 1) -> str:
    """How a local judge is named in results and calibration caches: ``smollm2_135m``, ``smollm2_135m+/a, both orders``."""
    judge = judge_model + (f"+{judge_adapter}" if judge_adapter else "")
    return judge + (", both orders" if judge_orders == 2 else "")


def ae2_weighted_scheme() -> dict[str, Any]:
    """The AE2 weighted annotator's prompt, parser and batching, minus its (OpenAI) decoder."""
    (settings,) = load_annotator_config(AE2_WEIGHTED).values()
    template = alpaca_eval_configs_dir() / settings["prompt_template"]
    return {
        "prompt_template": str(template),
        "fn_completion_parser": settings["fn_completion_parser"],
        "completion_parser_kwargs": settings["completion_parser_kwargs"],
        "completion_key": settings["completion_key"],
        "batch_size": settings.get("batch_size", 1),
    }


def write_annotator_config(config_dir: Path, entry: str, settings: dict[str, Any]) -> Path:
    folder = Path(config_dir) / entry
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "configs.yaml"
    header = (
        "# Written by bft.eval: alpaca_eval's AE2 weighted scheme; fn_completions and completions_kwargs are passed\n"
        "# to alpaca_eval.evaluate as keyword arguments (see provenance in leaderboard.json).\n"
    )
    path.write_text(header + yaml.safe_dump({entry: settings}, sort_keys=False))
    return path


# ---------------------------------------------------------------- a served judge (bft.eval.endpoint)


def scheme_settings(scheme: str) -> dict[str, Any]:
    """The alpaca_eval annotator ``scheme``'s prompt, parser and decoding settings (its decoder must be OpenAI's)."""
    configs = load_annotator_config(scheme)
    if len(configs) != 1:
        raise AnnotatorError(f"judge_api_scheme={scheme}: needs an annotator config with one entry, it has {len(configs)}")
    (settings,) = configs.values()
    if settings.get("fn_completions") != "openai_completions":
        raise AnnotatorError(f"judge_api_scheme={scheme}: its decoder is {settings.get('fn_completions')}, not openai_completions")
    settings = dict(settings)
    template = Path(settings["prompt_template"])
    for root in (annotator_config_path(scheme).parent, alpaca_eval_configs_dir()):
        if (root / template).is_file():
            settings["prompt_template"] = str(root / template)
            break
    return settings


def is_weighted(settings: dict[str, Any]) -> bool:
    return settings.get("fn_completion_parser") == "logprob_parser"


def check_scheme(scheme: str, orders: int) -> dict[str, Any]:
    """The settings of ``judge_api_scheme``, refused (one line) where they cannot judge in ``orders`` orders."""
    settings = scheme_settings(scheme)
    if orders not in (1, 2):
        raise AnnotatorError(f"judge_orders must be 1 or 2, got {orders}")
    if orders == 2 and not (is_weighted(settings) and "alpaca_eval_clf" in settings["prompt_template"]):
        raise AnnotatorError(f"judge_orders=2 needs the weighted AE2 scheme; judge_api_scheme={scheme} is not")
    return settings


def annotator_problem(name: str) -> str | None:
    """Why ``name`` is not an annotator (None when it is one): ``local``, ``openai_compatible``, an alpaca_eval
    annotator name, or a path to an annotator folder / ``configs.yaml``. Reads no package, loads no model."""
    if name in (LOCAL, ENDPOINT):
        return None
    try:
        annotator_config_path(name)
        return None
    except AnnotatorError:
        pass
    import difflib

    known = list_alpaca_eval_annotators()
    close = difflib.get_close_matches(name, [LOCAL, ENDPOINT, *known], n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return (
        f"is not one of {LOCAL}, {ENDPOINT}, an alpaca_eval annotator ({len(known)} names, e.g. alpaca_eval_gpt4, "
        f"{AE2_WEIGHTED}) or a path to an annotator configs.yaml{hint}"
    )


def endpoint_annotator(ep: Endpoint, config_dir: Path, orders: int) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """``(configs.yaml path, kwargs for alpaca_eval's annotator, provenance settings)`` for the served judge."""
    settings = check_scheme(ep.scheme, orders)
    entry = "bft_api_" + slug(f"{ep.model}_{ep.scheme}")
    folder = Path(config_dir) / entry
    folder.mkdir(parents=True, exist_ok=True)
    clients = folder / "client_configs.yaml"
    client = {"client_class": "bft.eval.endpoint_client.EnvKeyOpenAI", "base_url": ep.url}
    client["api_key_env"] = ep.key_env
    clients.write_text(yaml.safe_dump({"default": [client]}, sort_keys=False))
    completions_kwargs = dict(settings.pop("completions_kwargs", {}) or {})
    completions_kwargs.update(
        model_name=ep.model,
        client_config_path=str(clients),
        requires_chatml=True,  # the prompt templates are ChatML: always the chat endpoint
        price_per_token=0.0,
        orders=orders,
    )
    settings.pop("fn_completions")
    path = write_annotator_config(config_dir, entry, settings)
    kwargs = {"fn_completions": endpoint_completions, "completions_kwargs": completions_kwargs}
    provenance = {
        **ep.provenance(),
        "fn_completions": f"{endpoint_completions.__module__}.endpoint_completions -> alpaca_eval openai_completions",
        "completions_kwargs": {k: v for k, v in completions_kwargs.items() if k != "client_config_path"},
        "alpaca_eval_annotator": entry,
    }
    return path, kwargs, provenance


def resolve_annotator(
    name: str,
    config_dir: Path,
    *,
    judge_model: str = "smollm2_135m",
    judge_adapter: str | None = None,
    judge_dtype: str = "auto",
    judge_batch_size: int = 4,
    judge_orders: int = 1,
    judge_device: str = "auto",
    endpoint: Endpoint | None = None,
) -> ResolvedAnnotator:
    """Turn an annotator name into an alpaca_eval config; local and served judges' configs go under ``config_dir``."""
    from bft.eval import judges

    if name == ENDPOINT:
        if endpoint is None:
            raise AnnotatorError(f"annotator '{ENDPOINT}' needs judge_url and judge_model")
        try:
            path, kwargs, settings = endpoint_annotator(endpoint, config_dir, judge_orders)
        except EndpointError as e:
            raise AnnotatorError(str(e)) from e
        judge = endpoint.model + (", both orders" if judge_orders == 2 else "")
        return ResolvedAnnotator(name, str(path), kwargs, judge=judge, settings=settings)

    if name == LOCAL:
        if judge_orders not in (1, 2):
            raise AnnotatorError(f"judge_orders must be 1 or 2, got {judge_orders}")
        scheme = ae2_weighted_scheme()
        judge = local_judge_id(judge_model, judge_adapter, judge_orders)
        entry = "bft_local_" + slug(judge)
        fn = judges.hf_logprob_completions
        completions_kwargs = {
            "model_name": judge_model,
            "adapter": judge_adapter,
            "dtype": judge_dtype,
            "batch_size": judge_batch_size,
            "orders": judge_orders,
            "device": judge_device,  # a generation.device setting (auto, cpu, cuda, cuda:N)
        }
        path = write_annotator_config(config_dir, entry, scheme)
        settings = {
            "scheme": f"{AE2_WEIGHTED} prompt + logprob_parser on m/M (preference = 2 - p(m)/(p(m)+p(M)))",
            "fn_completions": f"{fn.__module__}.{fn.__name__}",
            "completions_kwargs": completions_kwargs,
            "alpaca_eval_annotator": entry,
        }
        kwargs = {"fn_completions": fn, "completions_kwargs": completions_kwargs}
        return ResolvedAnnotator(name, str(path), kwargs, judge=judge, settings=settings)

    check_annotator_ready(name)
    path = annotator_config_path(name)
    configs = load_annotator_config(name)
    judges_used = sorted({str((s.get("completions_kwargs") or {}).get("model_name", "?")) for s in configs.values()})
    settings = {
        entry: {
            "fn_completions": s.get("fn_completions"),
            "completions_kwargs": s.get("completions_kwargs", {}),
            "fn_completion_parser": s.get("fn_completion_parser"),
        }
        for entry, s in configs.items()
    }
    return ResolvedAnnotator(name, str(path), {}, judge=",".join(judges_used), settings=settings)
