"""vLLM backend (GPU clusters): same interface as the transformers backend.

Import-guarded: CPU installs never import vllm; constructing the backend without it raises a clear error.
Prefix caching (on by default) gives the shared-prefix reuse that the hf backend implements by hand.
Seeded sampling: each request carries its own seed derived from (seed, prompt, occurrence) exactly as in
:func:`bft.generation.hf.prompt_seed`, so outputs do not depend on request order or batching.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bft.generation.base import BackendStats, Completion, Sampling, single_token_ids
from bft.generation.sampling import prompt_seed


def _import_vllm():
    try:
        import vllm
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("the vllm generation backend needs vLLM: pip install bft[vllm]") from err
    return vllm


class VLLMBackend:
    def __init__(self, llm, tokenizer, lora_request=None) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.lora_request = lora_request
        self._stats = BackendStats()

    @classmethod
    def from_name(
        cls,
        model_name: str,
        dtype: str = "auto",
        adapter: str | None = None,
        options: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> VLLMBackend:
        vllm = _import_vllm()
        from bft.models.registry import load_tokenizer, resolve_model_path

        kwargs: dict[str, Any] = {"enable_prefix_caching": True, **(options or {})}
        if adapter:
            kwargs.setdefault("enable_lora", True)
            kwargs.setdefault("max_lora_rank", 64)
        llm = vllm.LLM(model=resolve_model_path(model_name), seed=seed, dtype=dtype, **kwargs)
        lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("adapter", 1, adapter)
        return cls(llm, load_tokenizer(model_name), lora)

    def _prompts(self, prompts: list[str]):
        # Rendered prompts already contain the special tokens: pass token ids so vLLM adds none.
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        return [{"prompt_token_ids": x} for x in ids], ids

    def generate(self, prompts: list[str], sampling: Sampling, seed: int) -> list[Completion]:
        vllm = _import_vllm()
        start = time.perf_counter()
        inputs, ids = self._prompts(prompts)
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
