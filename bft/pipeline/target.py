"""Reaching ``data.max_generated``: how many corpus documents a target needs, and when to read more.

With a target set, the runner (``bft.pipeline.runner``) reads the corpus in rounds: round 1 reads the documents the
target needs at the papers' keep rates (:func:`expected_rates`) times :data:`READ_MARGIN`; each later round reads a
longer prefix of the corpus in the same order, sized from the yield measured so far (:func:`next_budget`), until
the decontaminated generated pairs reach the target, the corpus runs out, ``corpus.max_documents`` (now an upper
bound, null = none) is reached, or :data:`MAX_ROUNDS` rounds have run. A round is the plan of the config with
``corpus.max_documents`` set to its budget (:func:`with_budget`), so every artifact key hashes the documents it
read; the generation stages reuse the shards a shorter prefix already computed (``bft.workers.run``). Everything
here is a pure function of the config and of earlier rounds' counts: the same config gives the same rounds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bft.rewriter.source import rewriter_source

READ_MARGIN = 1.15  # read this much more than the estimate needs, so that one round usually suffices
MAX_ROUNDS = 8  # stop reading more after this many rounds (the shortfall says so)
MAX_GROWTH = 8.0  # a later round reads at most this many times the documents of the one before
MIN_GROWTH = 1.25  # ... and at least this many times (each round must read noticeably more)

# The papers' keep rates (/work/shared/reference/method.md): fraction kept at each step, and where it comes from.
BFT_SCORE5 = 0.136  # BFT: 13.6% of the candidate pool scored 5 (88% of the ratings parsed)
HB_A5 = 41_821 / 502_133  # HB Table 2: A5 (score 5) of 502,133 candidates, 8.3%
HB_A4 = 195_043 / 502_133  # HB Table 2: A4 (score >= 4), 38.8%
DOLMA_CONTEXT_KEEP = 0.75  # BFT: documents near Llama-2's 4,096-token context dropped, "about 25% removed"


@dataclass(frozen=True)
class Rate:
    step: str  # corpus | curation | rewrite
    keep: float  # expected fraction kept
    why: str  # the figure's source


def _is_dolma(source: str) -> bool:
    return "dolma" in source.lower()


def expected_rates(cfg: DictConfig) -> list[Rate]:
    """The fraction of documents each step is expected to keep, from the papers where they report it (1.0 and
    "not reported" where they do not: the rounds measure it)."""
    rates = []
    if _is_dolma(cfg.corpus.source) and cfg.corpus.max_tokens is not None:
        rates.append(Rate("corpus", DOLMA_CONTEXT_KEEP, "BFT: ~25% of Dolma dropped near the context length"))
    else:
        rates.append(Rate("corpus", 1.0, "corpus filters: not reported, measured"))
    cur = cfg.curation
    if cur.enabled:
        if cur.top_fraction is not None:
            rates.append(Rate("curation", float(cur.top_fraction), f"curation.top_fraction={cur.top_fraction}"))
        elif cur.threshold is not None and cur.threshold > 4:
            if cfg.method == "humpback":
                rates.append(Rate("curation", HB_A5, "HB: A5 = 41,821 of 502,133 candidates scored 5"))
            else:
                rates.append(Rate("curation", BFT_SCORE5, "BFT: 13.6% of the pool scored 5"))
        elif cur.threshold is not None and cur.threshold > 3:
            rates.append(Rate("curation", HB_A4, "HB: A4 = 195,043 of 502,133 candidates scored >= 4"))
        else:
            rates.append(Rate("curation", 1.0, "curation keep rate: no paper figure, measured"))
    if rewriter_source(cfg).rewrites:
        rates.append(Rate("rewrite", 1.0, "rewrite drops: not reported, measured"))
    return rates


def expected_yield(cfg: DictConfig) -> float:
    """Generated pairs per document read, at the expected rates."""
    return math.prod(r.keep for r in expected_rates(cfg))


def documents_needed(cfg: DictConfig) -> int | None:
    """Documents the target needs at the expected rates (no margin); None without a target."""
    target = cfg.data.max_generated
    if target is None:
        return None
    return math.ceil(target / expected_yield(cfg))


def _capped(budget: int, cfg: DictConfig) -> int:
    cap = cfg.corpus.max_documents
    return budget if cap is None else min(budget, int(cap))


def first_budget(cfg: DictConfig) -> int | None:
    """Documents round 1 reads: the estimate times the margin, within ``corpus.max_documents``; None = no rounds
    (no target, or a baseline dataset instead of generated data): the corpus is read as configured."""
    needed = documents_needed(cfg)
    if needed is None or cfg.data.baseline_file:
        return None
    return _capped(max(1, math.ceil(needed * READ_MARGIN)), cfg)


def with_budget(cfg: DictConfig, budget: int | None) -> DictConfig:
    """The config of a round: ``corpus.max_documents`` = its budget (the corpus stage reads that prefix)."""
    if budget is None:
        return cfg
    out = cfg.copy()
    OmegaConf.update(out, "corpus.max_documents", int(budget), merge=False)
    return out


@dataclass
class Round:
    """One round's figures: documents it asked for and read, and what each step kept."""

    budget: int
    read: int  # documents the corpus stage read
    tasks: int  # corpus tasks (files read side by side: each reads its share of the budget)
    funnel: dict[str, int | None] = field(default_factory=dict)  # corpus, candidates, curated, generated, ...
    generated: int = 0  # generated pairs after rewriting and decontamination, before the target's cap


def exhausted(rounds: list[Round]) -> bool:
    """The corpus has no more documents: a single task read fewer than asked, or a longer budget read no more."""
    last = rounds[-1]
    if last.read >= last.budget:
        return False
    return last.tasks <= 1 or (len(rounds) > 1 and rounds[-2].read == last.read)


def next_budget(cfg: DictConfig, rounds: list[Round]) -> tuple[int | None, str | None]:
    """``(documents the next round reads, None)``, or ``(None, why no round follows)``: ``reached`` when the target
    is met, else the reason the run stays short."""
    target, last = cfg.data.max_generated, rounds[-1]
    if last.generated >= target:
        return None, "reached"
    if exhausted(rounds):
        return None, f"the corpus ran out after {last.read:,} documents"
    cap = cfg.corpus.max_documents
    if cap is not None and last.budget >= cap:
        return None, f"corpus.max_documents={cap:,} reached"
    if len(rounds) >= MAX_ROUNDS:
        return None, f"{MAX_ROUNDS} rounds read {last.read:,} documents"
    per_doc = last.generated / last.read if last.read else 0.0
    wanted = math.ceil(target / per_doc * READ_MARGIN) if per_doc > 0 else math.inf
    budget = min(max(wanted, math.ceil(last.budget * MIN_GROWTH)), math.ceil(last.budget * MAX_GROWTH))
    return _capped(int(budget), cfg), None


def target_summary(cfg: DictConfig, rounds: list[Round], reason: str | None) -> dict[str, Any] | None:
    """What summary.json records about the target: target, reached, documents read, rounds and, when short, why."""
    target = cfg.data.max_generated
    if target is None or not rounds:
        return None
    last = rounds[-1]
    reached = min(last.generated, target)
    short = target - reached
    return {
        "target_generated": target,
        "reached": reached,
        "documents_read": last.read,
        "rounds": [asdict(r) for r in rounds],
        "shortfall": short,
        "reason": None if not short else reason,
    }


def shortfall_line(target: dict[str, Any] | None) -> str | None:
    """The one line the console (and ``bft-report``) prints about the target, or None without one."""
    if not target:
        return None
    n, goal, read = target["reached"], target["target_generated"], target.get("documents_read")
    rounds = len(target.get("rounds") or [])
    after = f" after reading {read:,} documents" + (f" in {rounds} round(s)" if rounds else "") if read is not None else ""
    if not target["shortfall"]:
        return f"data target: {goal:,} generated pairs reached{after}"
    funnel = (target["rounds"][-1].get("funnel") or {}) if rounds else {}
    steps = ", ".join(f"{k} {v:,}" for k, v in funnel.items() if v is not None)
    return f"data target SHORT: {n:,} of {goal:,} generated pairs ({target['shortfall']:,} missing){after}: {target['reason']}" + (
        f" ({steps})" if steps else ""
    )


def plan_line(cfg: DictConfig) -> str | None:
    """The dry run's line: documents the target needs at the papers' keep rates, and what round 1 reads."""
    budget = first_budget(cfg)
    if budget is None:
        return None
    rates = "; ".join(f"{r.step} keeps {r.keep:.1%}: {r.why}" for r in expected_rates(cfg))
    cap = cfg.corpus.max_documents
    return (
        f"data target: {cfg.data.max_generated:,} generated pairs need about {documents_needed(cfg):,} documents at the "
        f"papers' keep rates ({rates}); round 1 reads {budget:,} (x{READ_MARGIN}), later rounds read further until the "
        f"target is met or the corpus runs out (corpus.max_documents: {'no cap' if cap is None else f'{cap:,}'})"
    )
