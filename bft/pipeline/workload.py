"""How much work each step of a plan is, from the config alone (the dry run's records, tokens and models).

Estimates, stated as such: 4 characters per token; a document counts ``corpus.max_chars`` (an upper bound); prompt
overheads are the templates' rough sizes; every candidate is rewritten unless ``data.max_generated`` or
``curation.top_fraction`` bounds the kept set (with ``data.max_generated``, the documents read and pairs kept are
those of round 1 at the papers' keep rates, ``bft.pipeline.target``); training processes ``max_steps x batch_size
x max_seq_len`` tokens.
"""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bft.pipeline.cost import Work, model_params
from bft.pipeline.plan import Step
from bft.rewriter.source import rewriter_source

CHARS_PER_TOKEN = 4
INSTRUCTION_TOKENS = 64  # an instruction, and the eval set's prompts
PROMPT_OVERHEAD = {"augment": 60, "curate": 300, "rewrite": 120, "judge": 200}
HUB_EVAL_SIZE = {"ae1": 805, "ae2": 805}


def _lines(path: Path) -> int | None:
    try:
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return None


def _embedded_count(name: str) -> int | None:
    from bft.data.embedded import embedded_file

    return _lines(Path(str(embedded_file(name))))


def _source_count(source: str, embedded: str) -> int | None:
    if source == "embedded":
        return _embedded_count(embedded)
    path = Path(source).expanduser()
    return _lines(path) if path.suffix == ".jsonl" and path.is_file() else None


def _min(*values: int | None) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _times(records: int | None, per_record: int) -> int | None:
    return None if records is None else records * per_record


class Workload:
    """Records and tokens of each step of ``plan`` for the RESOLVED config ``cfg``."""

    def __init__(self, cfg: DictConfig, plan: list[Step]) -> None:
        self.cfg = cfg
        self.plan = plan
        seed_size = _source_count(cfg.seed.source, "seed.jsonl")
        self.seed = _min(cfg.seed.size, seed_size) if cfg.seed.size is not None else seed_size
        self.full_seed = seed_size
        self.docs = _min(cfg.corpus.max_documents, _source_count(cfg.corpus.source, "corpus.jsonl"))
        fraction = cfg.curation.top_fraction if cfg.curation.enabled else None
        kept = self.docs if fraction is None or self.docs is None else int(self.docs * fraction)
        if fraction is None and self.docs is not None and cfg.data.max_generated is not None:
            kept = _expected_kept(cfg, self.docs)  # a target reads documents for it: the papers' keep rates
        self.kept = _min(kept, cfg.curation.top_k if cfg.curation.enabled else None)
        self.generated = _min(self.kept, cfg.data.max_generated)
        self.eval_n = _min(cfg.eval.max_instances, HUB_EVAL_SIZE.get(cfg.eval.set) or _source_count(cfg.eval.set, "eval.jsonl"))
        self.doc_tokens = cfg.corpus.max_chars // CHARS_PER_TOKEN

    def works(self) -> list[Work]:
        return [self.work(step) for step in self.plan]

    def _train(self, step: Step, model: str, sft: DictConfig, records: int | None) -> Work:
        tokens = sft.max_steps * sft.batch_size * sft.max_seq_len
        return Work(step.name, model, model_params(model), records, tokens, self.cfg.peft.method)

    def _generate(self, step: Step, model: str | None, records: int | None, per_record: int) -> Work:
        return Work(step.name, model, model_params(model), records, _times(records, per_record), "generate")

    def work(self, step: Step) -> Work:
        cfg, name = self.cfg, step.stage.name
        if name == "backward_model":
            records = self.full_seed if step.upstream["seed"] == "seed_full" else self.seed
            return self._train(step, cfg.backward_model.name, cfg.sft.backward, records)
        if name == "seed_model":
            return self._train(step, cfg.curation_model.name, cfg.sft.seed, self.seed)
        if name == "curation_model":
            return self._train(step, cfg.curation_model.name, cfg.sft.seed, _sum(self.seed, self.kept))
        if name == "final_model":
            return self._train(step, cfg.final_model.name, cfg.sft.final, _sum(self.seed, self.generated))
        if name == "augment":
            per = self.doc_tokens + PROMPT_OVERHEAD["augment"] + cfg.generation.augment.max_new_tokens
            return self._generate(step, cfg.backward_model.name, self.docs, per)
        if name == "curate":
            cur = cfg.curation
            new = {"logprob": 1, "generate": cur.max_new_tokens}.get(cur.scoring, cur.max_new_tokens)
            samples = cur.n_samples if cur.scoring == "generate_n" else 1
            per = samples * (self.doc_tokens + INSTRUCTION_TOKENS + PROMPT_OVERHEAD["curate"] + new)
            return self._generate(step, cfg.curation_model.name, self.docs, per)
        if name == "rewrite":
            source = rewriter_source(cfg)
            if not source.rewrites:
                return Work(step.name, None, None, self.kept, 0, "none")
            model = source.model if source.kind == "model" else cfg.curation_model.name
            per = self.doc_tokens + INSTRUCTION_TOKENS + PROMPT_OVERHEAD["rewrite"] + cfg.rewriter.max_new_tokens
            return self._generate(step, model, self.kept, per)
        if name in ("eval_outputs", "base_outputs"):
            return self._generate(step, cfg.final_model.name, self.eval_n, INSTRUCTION_TOKENS + cfg.eval.max_new_tokens)
        if name == "evaluate" and cfg.eval.annotator == "local":
            per = INSTRUCTION_TOKENS + PROMPT_OVERHEAD["judge"] + 2 * cfg.eval.max_new_tokens
            return self._generate(step, cfg.eval.judge_model, self.eval_n, per)
        records = {"seed": self.seed, "corpus": self.docs, "train_data": _sum(self.seed, self.generated)}.get(name)
        records = self.eval_n if name == "evaluate" else records
        if step.name == "seed_full":
            records = self.full_seed
        return Work(step.name, None, None, records, None, "none")


def _expected_kept(cfg: DictConfig, docs: int) -> int:
    """Pairs curation keeps of ``docs`` documents at the papers' keep rates (``bft.pipeline.target``)."""
    from bft.pipeline.target import expected_rates

    return math.ceil(docs * math.prod(r.keep for r in expected_rates(cfg) if r.step != "rewrite"))


def _sum(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def tensor_parallel_size(cfg: DictConfig) -> int:
    """``generation.tensor_parallel_size`` where the schema has it (vLLM placement), else 1."""
    return int(OmegaConf.select(cfg, "generation.tensor_parallel_size", default=1) or 1)
