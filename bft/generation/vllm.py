"""vLLM backend (GPU clusters): same interface as the transformers backend.

Import-guarded: CPU installs never import vllm; constructing the backend without it raises a clear error.
Prefix caching (on by default) gives the shared-prefix reuse that the hf backend implements by hand.
Placement comes from ``generation.tensor_parallel_size``, ``data_parallel_size``, ``gpu_memory_utilization``,
``max_model_len`` and ``dtype`` (:func:`engine_kwargs`); ``generation.vllm`` adds any other ``vllm.LLM`` argument.
Seeded sampling: each request carries its own seed derived from (seed, prompt, occurrence) exactly as in
:func:`bft.generation.hf.prompt_seed`, so outputs do not depend on request order or batching.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bft.config.validate import ConfigError
from bft.generation.base import BackendStats, Completion, Sampling, check_context, setting, single_token_ids
from bft.generation.sampling import prompt_seed

PLACEMENT_KEYS = ("tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization", "max_model_len", "dtype")


def _import_vllm():
    try:
        import vllm
    except ImportError as err:
        raise ConfigError(
            f"generation.backend=vllm needs the vllm package ({err}): pip install 'bft[vllm]' on a GPU machine, "
            "or set generation.backend=hf"
        ) from None
    return vllm


def engine_kwargs(gen_cfg: Any) -> dict[str, Any]:
    """The ``vllm.LLM`` arguments of a generation config (dataclass or DictConfig); ConfigError names a bad key."""
    extra = dict(setting(gen_cfg, "vllm") or {})
    clash = sorted(set(extra) & set(PLACEMENT_KEYS))
    if clash:
        raise ConfigError(f"generation.vllm.{clash[0]}: set generation.{clash[0]} instead (placement keys live there)")
    tp = setting(gen_cfg, "tensor_parallel_size", 1)
    dp = setting(gen_cfg, "data_parallel_size", 1)
    memory = setting(gen_cfg, "gpu_memory_utilization", 0.9)
    max_len = setting(gen_cfg, "max_model_len")
    for key, value in (("tensor_parallel_size", tp), ("data_parallel_size", dp)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"generation.{key} must be an integer >= 1, got {value!r}")
    if not isinstance(memory, int | float) or not 0 < memory <= 1:
        raise ConfigError(f"generation.gpu_memory_utilization is a fraction of GPU memory in (0, 1], got {memory!r}")
    if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
        raise ConfigError(f"generation.max_model_len must be a positive integer or null, got {max_len!r}")
    kwargs: dict[str, Any] = {
        "enable_prefix_caching": True,
        **extra,
        "dtype": setting(gen_cfg, "dtype", "auto"),
        "tensor_parallel_size": tp,
        "gpu_memory_utilization": float(memory),
    }
    if dp > 1:  # passed only when asked for: vLLM versions without offline data parallelism then fail loudly
        kwargs["data_parallel_size"] = dp
    if max_len is not None:
        kwargs["max_model_len"] = max_len
    return kwargs


def check_vllm_config(gen_cfg: Any) -> None:
    """Fail before any work when ``generation.backend=vllm`` cannot start: bad placement values or no vllm."""
    engine_kwargs(gen_cfg)
    _import_vllm()


def max_model_len(llm) -> int | None:
    """The context vLLM resolved (``llm.llm_engine.model_config.max_model_len``); None where it is not exposed."""
    value = getattr(getattr(getattr(llm, "llm_engine", None), "model_config", None), "max_model_len", None)
    return value if isinstance(value, int) else None


class VLLMBackend:
    device = "cuda"  # where vLLM runs (what a generation stage records; generation.device is the hf backend's)

    def __init__(self, llm, tokenizer, lora_request=None) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.lora_request = lora_request
        self._stats = BackendStats()
        # checked before a call, so a too-long prompt is bft's one line naming the record (vLLM would raise mid-call)
        self.context_length = max_model_len(llm)

    @classmethod
    def from_config(cls, gen_cfg: Any, model_name: str, adapter: str | None = None, seed: int = 0) -> VLLMBackend:
        """The backend for ``model_name`` (+ LoRA adapter) placed as ``gen_cfg`` says (:func:`engine_kwargs`)."""
        kwargs = engine_kwargs(gen_cfg)
        vllm = _import_vllm()
        from bft.models.registry import load_tokenizer, resolve_model_path

        if adapter:
            kwargs.setdefault("enable_lora", True)
            kwargs.setdefault("max_lora_rank", 64)
        llm = vllm.LLM(model=resolve_model_path(model_name), seed=seed, **kwargs)
        lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("adapter", 1, adapter)
        return cls(llm, load_tokenizer(model_name), lora)

    @classmethod
    def from_name(
        cls,
        model_name: str,
        dtype: str = "auto",
        adapter: str | None = None,
        options: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> VLLMBackend:
        """Single-GPU defaults plus ``options`` (placement keys included): see :meth:`from_config`."""
        options = dict(options or {})
        placement = {k: options.pop(k) for k in PLACEMENT_KEYS if k in options}
        return cls.from_config({"dtype": dtype, **placement, "vllm": options}, model_name, adapter=adapter, seed=seed)

    def _prompts(self, prompts: list[str]):
        # Rendered prompts already contain the special tokens: pass token ids so vLLM adds none.
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        return [{"prompt_token_ids": x} for x in ids], ids

    def generate(self, prompts: list[str], sampling: Sampling, seed: int) -> list[Completion]:
        vllm = _import_vllm()
        start = time.perf_counter()
        inputs, ids = self._prompts(prompts)
        check_context(ids, self.context_length, room=1, source="vLLM max_model_len")
        seen: Counter[str] = Counter()
        params = []
        for p in prompts:
            params.append(
                vllm.SamplingParams(
                    temperature=0.0 if sampling.greedy else sampling.temperature,
                    top_p=1.0 if sampling.greedy else sampling.top_p,
                    max_tokens=sampling.max_new_tokens,
                    min_tokens=sampling.min_new_tokens,
                    seed=prompt_seed(seed, p, seen[p]),
                )
            )
            seen[p] += 1
        outputs = self.llm.generate(inputs, params, lora_request=self.lora_request, use_tqdm=False)
        results = []
        for out, prompt_ids in zip(outputs, ids, strict=True):
            c = out.outputs[0]
            results.append(
                Completion(
                    text=c.text,
                    prompt_tokens=len(prompt_ids),
                    new_tokens=len(c.token_ids),
                    finished=c.finish_reason == "stop",
                )
            )
        self._stats.generated(ids, results, start)
        return results

    def next_token_logprobs(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        vllm = _import_vllm()
        start = time.perf_counter()
        cand_ids = single_token_ids(self.tokenizer, candidates)
        inputs, ids = self._prompts(prompts)
        check_context(ids, self.context_length, room=1, source="vLLM max_model_len")
        params = vllm.SamplingParams(max_tokens=1, temperature=0.0, logprobs=20)
        outputs = self.llm.generate(inputs, params, lora_request=self.lora_request, use_tqdm=False)
        results = []
        for out in outputs:
            top = out.outputs[0].logprobs[0]  # {token_id: Logprob} of the first generated position (top 20)
            floor = min((lp.logprob for lp in top.values()), default=-100.0)
            # Candidates outside the top 20 get the 20th log-probability as an upper bound.
            results.append([top[t].logprob if t in top else floor for t in cand_ids])
        self._stats.scored(ids, start)
        return results

    def stats(self) -> dict[str, Any]:
        return self._stats.as_dict()
