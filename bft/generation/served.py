"""Generation through an OpenAI-compatible server, on datatrove's inference servers (``generation.backend=served``,
or a stage listed in ``generation.server.stages``).

datatrove (``datatrove.pipeline.inference``) owns the server: ``kind=vllm`` / ``sglang`` start ``vllm serve`` /
SGLang on the stage's model (tensor and data parallel from ``generation.tensor_parallel_size`` /
``data_parallel_size``), wait for it, watch its health and stop it; ``kind=endpoint`` talks to one already running
(``vllm serve``, SGLang, TGI, llama.cpp's server, ``transformers serve``, a hosted API). bft renders every prompt
itself with the stage's chat template and sends it as a raw completion (``/v1/completions``), so the template the
model was trained with is the one it is asked with. Each request carries the per-prompt seed of
:func:`bft.generation.sampling.prompt_seed` (servers that honour ``seed``, as vLLM does, then sample as
reproducibly as the in-process backends); greedy decoding sends ``temperature=0``.

Why not datatrove's ``InferenceRunner`` itself: it is a document pipeline step that writes its own output files
and keeps only each answer's text, while a bft stage writes content-addressed shards (N workers give one worker's
bytes) and logprob curation needs the answer's ``top_logprobs``. The servers, their start-up, health checks and
parallel settings are datatrove's; bft adds the request loop (bounded concurrency, retries of dropped
connections) and reads the whole answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bft.errors import ConfigError
from bft.generation.base import BackendStats, Completion, Sampling, check_context, setting

log = logging.getLogger(__name__)

STAGES = ("augment", "curate", "rewrite", "eval_outputs", "base_outputs")  # curate: every curate_<i> of Humpback's rounds
TOP_LOGPROBS = 20  # how many next-token logprobs a scoring request asks for (vLLM's default cap is 20)
PROBE_TIMEOUT_S = 120.0  # a server that loads the model on the first request (transformers serve) takes a while
RETRIES = 5  # a dropped connection or a 5xx is retried this many times, with a growing wait


class ServerUnusableError(ConfigError):
    """The configured server cannot be used: one line saying what to do."""


def served_stage(gen_cfg: Any, stage: str) -> bool:
    """Whether ``stage`` (augment, curate_<i>, rewrite, eval_outputs, base_outputs) generates through
    ``generation.server``."""
    server = setting(gen_cfg, "server") or {}
    name = re.sub(r"_\d+$", "", stage)  # curate_0, curate_1: curate
    return setting(gen_cfg, "backend") == "served" or name in list(setting(server, "stages") or [])


def api_root(url: str) -> str:
    """The server's root from a base URL given as ``http://host:port`` or ``http://host:port/v1``."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def api_key(key_env: str | None) -> str | None:
    if not key_env:
        return None
    key = os.environ.get(key_env)
    if not key:
        raise ServerUnusableError(f"generation.server.api_key_env={key_env} is not set in the environment")
    return key


def check_server_config(gen_cfg: Any) -> None:
    """The ``generation.server`` settings, without the network: one line naming the key."""
    server = setting(gen_cfg, "server")
    unknown = sorted(set(setting(server, "stages") or []) - set(STAGES))
    if unknown:
        raise ConfigError(f"generation.server.stages: unknown stage '{unknown[0]}' (stages: {', '.join(STAGES)})")
    if setting(gen_cfg, "backend") != "served" and not setting(server, "stages"):
        return
    kind, url = setting(server, "kind"), setting(server, "url")
    if kind == "endpoint":
        if not url:
            raise ConfigError("generation.server.url is not set: the base URL of the server, e.g. http://127.0.0.1:8000/v1")
        if urlparse(url).scheme not in ("http", "https") or not urlparse(url).hostname:
            raise ConfigError(f"generation.server.url={url}: must be http(s)://host[:port][/v1]")
    elif url:
        raise ConfigError(f"generation.server.url is set but generation.server.kind={kind} starts its own server")
    else:
        import shutil

        if shutil.which(kind) is None and kind == "vllm":
            raise ConfigError("generation.server.kind=vllm starts `vllm serve`, which is not installed: pip install 'bft[vllm]'")
    api_key(setting(server, "api_key_env"))


def merged_model_folder(name: str, adapter: str, dtype: str = "auto") -> str:
    """A full-model folder of ``name`` with the LoRA ``adapter`` merged in, made once and kept in bft's cache (a
    server loads a model folder; few load a LoRA adapter trained a minute ago)."""
    from bft.artifacts.store import atomic_folder
    from bft.models.registry import cache_dir, load_model

    adapter_path = Path(adapter).resolve()
    weights = sorted(p for p in adapter_path.iterdir() if p.is_file())
    stamp = "\0".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights)
    digest = hashlib.sha256(f"{name}\0{adapter_path}\0{stamp}".encode()).hexdigest()[:16]
    folder = cache_dir() / "merged" / digest
    if not (folder / ".complete").exists():
        from filelock import FileLock

        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            if not (folder / ".complete").exists():
                loaded = load_model(name, dtype=dtype, adapter=str(adapter_path))
                with atomic_folder(folder) as tmp:
                    loaded.model.save_pretrained(tmp, safe_serialization=True)
                    loaded.tokenizer.save_pretrained(tmp)
                    (tmp / ".complete").write_text(f"{name} + {adapter_path}\n")
                log.info("merged %s into %s for the server", adapter_path, folder)
    return str(folder)


def _server_class(kind: str):
    """datatrove's server for ``kind``; the endpoint one sends the key on every request and reads ``url`` given
    with or without its ``/v1``."""
    from datatrove.pipeline.inference.servers import EndpointServer, SGLangServer, VLLMServer

    if kind == "vllm":
        return VLLMServer
    if kind == "sglang":
        return SGLangServer

    class KeyedEndpoint(EndpointServer):
        def __init__(self, config, rank: int) -> None:
            super().__init__(config, rank)
            self.endpoint_url = api_root(config.endpoint_url)
            self.client = None  # datatrove's OpenAI client path drops logprobs: every request goes through post()

        async def is_ready(self) -> bool:
            return True  # the probe (ServedBackend.probe) says why a server is not usable, in one line

        async def _make_request(self, payload: dict) -> dict:
            return await post(self.endpoint_url, "/v1/completions", payload, self.config.api_key, self.config.request_timeout)

    return KeyedEndpoint


async def post(root: str, path: str, payload: dict, key: str | None, timeout: float | None) -> dict:
    """POST ``payload`` as JSON; the parsed answer, or :class:`ServerUnusableError` / ``ConnectionError``."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(f"{root}{path}", json=payload, headers=headers)
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as err:
        raise ConnectionError(f"{root}: {type(err).__name__}") from err
    if response.status_code >= 500:  # retried by a stage; the probe reports it
        raise ConnectionError(_refusal(root, response.status_code, response.text))
    if response.status_code != 200:
        raise ServerUnusableError(_refusal(root, response.status_code, response.text))
    return response.json()


def _refusal(root: str, status: int, body: str) -> str:
    import json

    try:
        detail = json.loads(body)
        detail = detail.get("detail") or detail.get("error", {}).get("message") or detail.get("message") or body
    except (ValueError, AttributeError):
        detail = body
    detail = " ".join(str(detail).split())[:300]
    if status in (401, 403):
        return f"generation.server.url={root} refused the key ({status}): check generation.server.api_key_env ({detail})"
    return f"generation.server.url={root} answered {status}: {detail}"


class ServedBackend:
    """The :class:`~bft.generation.base.GenerationBackend` of a server: raw completions, concurrent requests."""

    def __init__(self, server_cfg: Any, model: str, tokenizer: Any, context_length: int | None, tp: int = 1, dp: int = 1):
        from datatrove.pipeline.inference.run_inference import InferenceConfig

        self.kind = str(setting(server_cfg, "kind"))
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.max_concurrent = int(setting(server_cfg, "max_concurrent", 64))
        self.timeout = float(setting(server_cfg, "request_timeout_s", 600.0))
        self.key = api_key(setting(server_cfg, "api_key_env"))
        self.extra_body = dict(setting(server_cfg, "extra_body") or {})
        url = setting(server_cfg, "url")
        start = float(setting(server_cfg, "start_timeout_s", 1800.0))
        self.config = InferenceConfig(
            server_type="endpoint" if self.kind == "endpoint" else self.kind,
            model_name_or_path=model,
            model_max_context=context_length or 4096,
            use_chat=False,
            endpoint_url=url,
            api_key=self.key,
            tp=tp,
            dp=dp,
            request_timeout=self.timeout,
            model_kwargs=dict(setting(server_cfg, "args") or {}) or None,
            server_start_timeout_sec=start,
            server_ready_max_attempts=max(1, int(start // 5)),
        )
        self.device = f"server:{api_root(url)}" if self.kind == "endpoint" else f"server:{self.kind}"
        self._stats = BackendStats()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bft-served", daemon=True)
        self._thread.start()
        self._server = self._call(self._start())

    async def _start(self):
        """datatrove's server, made on this loop (its futures belong to it), started and ready: for vLLM/SGLang the
        process is up and answers ``/v1/models``."""
        server = _server_class(self.kind)(self.config, 0)
        await server.__aenter__()
        await server._server_ready
        return server

    @classmethod
    def from_config(cls, gen_cfg: Any, model_name: str, adapter: str | None = None) -> ServedBackend:
        from transformers import AutoConfig

        from bft.models.registry import load_tokenizer, resolve_model_path

        server = setting(gen_cfg, "server")
        tokenizer = load_tokenizer(model_name)
        folder = merged_model_folder(model_name, adapter, str(setting(gen_cfg, "dtype", "auto"))) if adapter else None
        served_name = setting(server, "model") or folder or resolve_model_path(model_name)
        config = AutoConfig.from_pretrained(resolve_model_path(model_name))
        text = getattr(config, "get_text_config", lambda: config)()
        context = setting(gen_cfg, "max_model_len") or getattr(text, "max_position_embeddings", None)
        tp, dp = int(setting(gen_cfg, "tensor_parallel_size", 1)), int(setting(gen_cfg, "data_parallel_size", 1))
        backend = cls(server, served_name, tokenizer, context, tp, dp)
        backend.probe()
        return backend

    # -- the event loop the server lives on -------------------------------------------------------------------
    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._server.__aexit__(None, None, None))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __del__(self) -> None:  # a started vLLM/SGLang server must not outlive its stage
        with contextlib.suppress(Exception):
            self.close()

    # -- requests -----------------------------------------------------------------------------------------------
    async def _request(self, payload: dict) -> dict:
        payload = {"model": self.model, **self.extra_body, **payload}
        for attempt in range(RETRIES + 1):
            try:
                return await self._server.make_request(dict(payload))
            except ServerUnusableError:
                raise
            except (TimeoutError, ConnectionError, OSError) as err:
                if attempt == RETRIES:
                    raise ServerUnusableError(f"{self.device}: no answer after {RETRIES} retries ({err})") from None
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    async def _many(self, payloads: list[dict]) -> list[dict]:
        limit = asyncio.Semaphore(self.max_concurrent)

        async def one(payload: dict) -> dict:
            async with limit:
                return await self._request(payload)

        return await asyncio.gather(*(one(p) for p in payloads))

    def probe(self) -> None:
        """One one-token request: an unreachable server, a refused key or a model it does not serve fails here, in
        one line, before any of the stage's work."""
        try:
            self._call(asyncio.wait_for(self._request_once({"prompt": "Hello", "max_tokens": 1}), PROBE_TIMEOUT_S))
        except ServerUnusableError:
            raise
        except (TimeoutError, ConnectionError, OSError) as err:
            why = type(err).__name__ if not str(err) else str(err)
            raise ServerUnusableError(f"{self.device} is unreachable ({why}): start the server or fix generation.server.url") from None

    async def _request_once(self, payload: dict) -> dict:
        return await self._server.make_request({"model": self.model, **payload})

    def generate(self, prompts: list[str], sampling: Sampling, seed: int) -> list[Completion]:
        from bft.generation.sampling import prompt_seed

        started = time.perf_counter()
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        check_context(ids, self.context_length, room=1, source="the served model's context")
        seen: Counter[str] = Counter()
        payloads = []
        for prompt in prompts:
            payload = {"prompt": prompt, "max_tokens": sampling.max_new_tokens, "seed": prompt_seed(seed, prompt, seen[prompt])}
            seen[prompt] += 1
            payload |= {"temperature": 0.0} if sampling.greedy else {"temperature": sampling.temperature, "top_p": sampling.top_p}
            if sampling.min_new_tokens:
                payload["min_tokens"] = sampling.min_new_tokens
            payloads.append(payload)
        answers = self._call(self._many(payloads))
        completions = [_completion(a, len(x)) for a, x in zip(answers, ids, strict=True)]
        self._stats.generated(ids, completions, started)
        self._stats.add("requests", len(payloads))
        return completions

    def next_token_logprobs(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        started = time.perf_counter()
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        check_context(ids, self.context_length, room=0, source="the served model's context")
        payloads = [{"prompt": p, "max_tokens": 1, "temperature": 0.0, "logprobs": TOP_LOGPROBS} for p in prompts]
        answers = self._call(self._many(payloads))
        scores = [_candidate_logprobs(a, candidates, self.device) for a in answers]
        self._stats.scored(ids, started)
        self._stats.add("requests", len(payloads))
        return scores

    def stats(self) -> dict[str, Any]:
        return self._stats.as_dict()


def _completion(answer: dict, prompt_tokens: int) -> Completion:
    choice = answer["choices"][0]
    usage = answer.get("usage") or {}
    return Completion(
        text=choice.get("text") or "",
        prompt_tokens=int(usage.get("prompt_tokens") or prompt_tokens),
        new_tokens=int(usage.get("completion_tokens") or 0),
        finished=choice.get("finish_reason") == "stop",
    )


def _top_logprobs(answer: dict, where: str) -> dict[str, float]:
    logprobs = (answer.get("choices") or [{}])[0].get("logprobs") or {}
    tops = logprobs.get("top_logprobs") or []
    if not tops or not isinstance(tops[0], dict):
        raise ServerUnusableError(
            f"{where} answers without logprobs, which curation.scoring=logprob reads: serve the judge with vLLM or "
            "SGLang, or use curation.scoring=generate"
        )
    return tops[0]


def _candidate_logprobs(answer: dict, candidates: list[str], where: str) -> list[float]:
    """The logprob of each candidate token among the first position's top logprobs; a candidate the server did not
    list gets the least listed logprob, the most it can have (so five unlisted scores still give a distribution)."""
    top = _top_logprobs(answer, where)
    found: dict[str, float] = {}
    for token, value in top.items():
        key = token.strip()
        found[key] = max(found.get(key, -math.inf), float(value))
    floor = min(found.values())
    return [found.get(c.strip(), floor) for c in candidates]


def check_served(cfg: Any) -> None:
    """Before any work: the server a run generates through answers, takes the key, serves ``generation.server.model``
    and, where curation scores by logprobs on it, returns them. One line on failure."""
    gen = cfg.generation
    served = [s for s in STAGES if served_stage(gen, s)]
    if not served or gen.server.kind != "endpoint":
        return  # a started server (kind=vllm/sglang) is checked as each stage starts it
    root, key = api_root(gen.server.url), api_key(gen.server.api_key_env)
    model = gen.server.model
    if model is None:
        from bft.models.registry import resolve_model_path

        model = resolve_model_path(cfg.model.name)  # what the first stage asks for by path (a server loading by path)
    probe = {"model": model, "prompt": "1", "max_tokens": 1, "temperature": 0.0}
    if "curate" in served and cfg.curation.scoring == "logprob":
        probe["logprobs"] = TOP_LOGPROBS
    try:
        answer = asyncio.run(asyncio.wait_for(post(root, "/v1/completions", probe, key, PROBE_TIMEOUT_S), PROBE_TIMEOUT_S * 3))
    except (ServerUnusableError, TimeoutError, ConnectionError, OSError) as err:
        if "refused the key" in str(err):
            raise
        if str(err).startswith("generation.server.url="):  # it answered, and not with a completion
            which = "generation.server.model" if gen.server.model else "generation.server.model (null: the model's folder)"
            raise ServerUnusableError(f"{err}; does it serve '{model}'? ({which})") from None
        why = str(err) or type(err).__name__
        raise ServerUnusableError(f"generation.server.url={root} is unreachable ({why}): start the server or fix the URL") from None
    if "logprobs" in probe:
        _top_logprobs(answer, f"generation.server.url={root}")
