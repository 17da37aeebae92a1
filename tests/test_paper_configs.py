"""Every paper experiment and every paper sweep point resolves to the papers' settings.

The expected values are a literal table written from ``shared/reference/method.md`` (the section of each value is
cited next to it), not read from the project's configs, so changing any paper value in ``conf/``,
``experiments/`` or ``sweeps/`` fails here. Where the papers are silent (sequence length, warmup, the backward and
seed models' steps in BFT), nothing is asserted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from bft.config.validate import validate

REPO = Path(__file__).resolve().parents[1]
LLAMA2_7B = "meta-llama/Llama-2-7b-hf"
LLAMA2_70B = "meta-llama/Llama-2-70b-hf"
LLAMA2_70B_CHAT = "meta-llama/Llama-2-70b-chat-hf"
LLAMA2_7B_CHAT = "meta-llama/Llama-2-7b-chat-hf"

# --- method.md "Training hyperparameters" -------------------------------------------------------------------
# BFT: cosine schedule, batch 32, weight decay 0.1, dropout 0.1; 7B lr 1e-5, best of {600, 900, 1200} steps;
# 70B lr 5.5e-6, 1,600 steps (51.2K) or 1,200 steps (25.6K).
BFT_ANY = {"schedule": "cosine", "batch_size": 32, "weight_decay": 0.1, "dropout": 0.1}
BFT_7B_FINAL = BFT_ANY | {"lr": 1.0e-5, "max_steps": (600, 900, 1200)}
BFT_70B_51K_FINAL = BFT_ANY | {"lr": 5.5e-6, "max_steps": 1600}
BFT_70B_25K_FINAL = BFT_ANY | {"lr": 5.5e-6, "max_steps": 1200}
# HB: lr 1e-5 decaying linearly to 9e-6 (floor RATIO 0.9), weight decay 0.1, dropout 0.1, batch 32 (8 below 3,000
# examples); steps by data size N: 100 -> 30 at batch 8, 800 -> 300, 1,600 -> 600, 3,200 -> 500 at batch 32,
# 6,400 -> 600, 12,800 -> 600, 25,600 -> 1,200, 51,200 -> 1,600.
HB_ANY = {"lr": 1.0e-5, "lr_floor_ratio": 0.9, "schedule": "linear", "weight_decay": 0.1, "dropout": 0.1}
HB_STEPS = {100: (30, 8), 800: (300, 8), 1600: (600, 8), 3200: (500, 32), 6400: (600, 32), 12800: (600, 32)}
HB_STEPS |= {25600: (1200, 32), 51200: (1600, 32)}


def hb(n: int) -> dict[str, Any]:
    steps, batch = HB_STEPS[n]
    return HB_ANY | {"max_steps": steps, "batch_size": batch}


# --- method.md "Pipeline" 1, 3, 5, 6 and 9 ----------------------------------------------------------------------
SEED = {"seed.source": "oasst1", "seed.size": 3200}  # 1. 3,200 oasst1 pairs
AUGMENT = {"generation.augment.temperature": 1.0, "generation.augment.top_p": 0.9}  # 3. BFT T = 1.0, p = 0.9
# 5. M0 rates 1-5 with the rubric, keep score 5 (BFT: one round, T = 1.0, p = 0.9; HB: two iterations)
CURATE_5 = {"curation.enabled": True, "curation.scoring": "generate", "curation.threshold": 5.0}
CURATE_5 |= {"curation.temperature": 1.0, "curation.top_p": 0.9, "curation.top_k": None, "curation.top_fraction": None}
# 6. Llama-2-70B-chat rewrites, T = 1.0, p = 0.9, answer between [RES] and [/RES]
REWRITE_70B = {"rewriter.name": LLAMA2_70B_CHAT, "rewriter.mode": "rewrite", "rewriter.temperature": 1.0}
REWRITE_70B |= {"rewriter.top_p": 0.9}
# 9. AlpacaEval 1.0: 805 instructions, GPT-4 judge, raw win rate vs text-davinci-003; sampling T = 0.7, p = 0.9
AE1 = {"eval.set": "ae1", "eval.annotator": "alpaca_eval_gpt4", "eval.reference": "dataset"}
AE1 |= {"eval.temperature": 0.7, "eval.top_p": 0.9, "eval.max_instances": None}
# "Tags": seed and web tags
TAGS = {"sft.seed_tag": "Answer in the style of an AI Assistant.", "sft.web_tag": "Answer with knowledge from web search."}
# "Corpora": BFT Dolma v1 CC (head bucket), HB ClueWeb (C4 stands in: ClueWeb is not on the hub)
DOLMA = {"corpus.source": "allenai/dolma"}
BFT_7B = {"model.name": LLAMA2_7B, "data.max_generated": 12800} | SEED | AUGMENT | AE1 | TAGS | DOLMA

PAPER: dict[str, dict[str, Any]] = {
    # BFT Table 1 "Dolma + filtering + rewriting", Llama-2-7B, 12.8K
    "backandforth_paper": BFT_7B | CURATE_5 | REWRITE_70B | {"method": "backandforth", "curation.iterations": 1},
    # BFT Table 1 "Dolma + filtering"
    "filter_only_paper": BFT_7B | CURATE_5 | {"method": "filter_only", "rewriter.name": "none", "curation.iterations": 1},
    # BFT Table 1 "Dolma + rewriting" (no curation)
    "rewrite_only_paper": BFT_7B | REWRITE_70B | {"method": "rewrite_only", "curation.enabled": False},
    # BFT Table 1 baselines: 12.8K pairs of the dataset + the seed
    "baseline_dataset_paper": BFT_7B | {"method": "baseline_dataset"},
    # BFT Table 2, Llama-2-70B, 51.2K
    "backandforth_70b_paper": SEED
    | AUGMENT
    | AE1
    | TAGS
    | DOLMA
    | CURATE_5
    | REWRITE_70B
    | {"model.name": LLAMA2_70B, "data.max_generated": 51200, "method": "backandforth"},
    # BFT Table 2 "Dolma + filtering + rewriting 25.6K"
    "backandforth_70b_25k_paper": SEED
    | AUGMENT
    | AE1
    | TAGS
    | DOLMA
    | CURATE_5
    | REWRITE_70B
    | {"model.name": LLAMA2_70B, "data.max_generated": 25600, "method": "backandforth"},
    # BFT Table 2 "Dolma + filtering + distilling 25.6K": the aligned model answers directly (Pipeline 7)
    "distill_paper": SEED
    | AUGMENT
    | AE1
    | TAGS
    | DOLMA
    | CURATE_5
    | {"model.name": LLAMA2_70B, "data.max_generated": 25600, "method": "distill"}
    | {"rewriter.name": LLAMA2_70B_CHAT, "rewriter.mode": "distill", "rewriter.temperature": 1.0, "rewriter.top_p": 0.9},
    # HB: two curation iterations keeping score 5, no rewriting, 12.8K pairs to sit beside BFT Table 1
    "humpback_paper": SEED
    | AUGMENT
    | AE1
    | TAGS
    | CURATE_5
    | {"model.name": LLAMA2_7B, "data.max_generated": 12800, "method": "humpback", "rewriter.name": "none"}
    | {"curation.iterations": 2, "corpus.source": "allenai/c4"}
    # HB Table 4: HB's best inference setting gives both tags, S_a then S_w
    | {"eval.inference_tag": "both"},
}
SFT: dict[str, dict[str, dict[str, Any]]] = {
    "backandforth_paper": {"backward": BFT_ANY, "seed": BFT_ANY, "final": BFT_7B_FINAL},
    "filter_only_paper": {"backward": BFT_ANY, "seed": BFT_ANY, "final": BFT_7B_FINAL},
    "rewrite_only_paper": {"backward": BFT_ANY, "seed": BFT_ANY, "final": BFT_7B_FINAL},
    "baseline_dataset_paper": {"final": BFT_7B_FINAL},
    "backandforth_70b_paper": {"backward": BFT_ANY, "seed": BFT_ANY, "final": BFT_70B_51K_FINAL},
    "backandforth_70b_25k_paper": {"backward": BFT_ANY, "seed": BFT_ANY, "final": BFT_70B_25K_FINAL},
    "distill_paper": {"backward": BFT_ANY, "seed": BFT_ANY, "final": BFT_70B_25K_FINAL},
    # backward and seed (M0/M1) models train on the 3,200 seed pairs, the final model on 12,800 generated pairs
    "humpback_paper": {"backward": hb(3200), "seed": hb(3200), "final": hb(12800)},
}
# Per-role models (method.md "Training hyperparameters": BFT's backward and forward models are Llama-2-70B base;
# "Pipeline" 6: the rewriter is Llama-2-70B-chat). Checked for each role whose config path exists in the composed
# config; the lead extends ROLE_PATHS with the per-role keys once they are merged.
ROLE_MODELS: dict[str, dict[str, str]] = {
    "backandforth_paper": {"backward": LLAMA2_70B, "curation": LLAMA2_70B, "final": LLAMA2_7B, "rewriter": LLAMA2_70B_CHAT},
    "filter_only_paper": {"backward": LLAMA2_70B, "curation": LLAMA2_70B, "final": LLAMA2_7B},
    "rewrite_only_paper": {"backward": LLAMA2_70B, "final": LLAMA2_7B, "rewriter": LLAMA2_70B_CHAT},
    "backandforth_70b_paper": {"backward": LLAMA2_70B, "curation": LLAMA2_70B, "final": LLAMA2_70B},
    "backandforth_70b_25k_paper": {"backward": LLAMA2_70B, "curation": LLAMA2_70B, "final": LLAMA2_70B},
    "distill_paper": {"backward": LLAMA2_70B, "curation": LLAMA2_70B, "final": LLAMA2_70B, "rewriter": LLAMA2_70B_CHAT},
    # HB: the backward and seed/curation models are fine-tuned from the final model's base, not BFT's 70B
    "humpback_paper": {"backward": LLAMA2_7B, "curation": LLAMA2_7B, "final": LLAMA2_7B},
}
ROLE_PATHS: dict[str, str] = {  # role -> config path of its model name (after bft.pipeline.roles.resolve)
    "backward": "backward_model.name",
    "curation": "curation_model.name",
    "final": "final_model.name",
    "rewriter": "rewriter.name",
}
# Settings checked only where the composed config has the key (the Dolma "head" perplexity bucket, method.md
# "Corpora", is being added by the corpus work as corpus.perplexity_bucket).
WHERE_PRESENT: dict[str, dict[str, Any]] = {
    name: {"corpus.perplexity_bucket": "head"} for name, expected in PAPER.items() if expected.get("corpus.source") == "allenai/dolma"
}


def _compose(compose_cfg, *overrides: str):
    cfg = compose_cfg(*overrides, "data.baseline_file=/tmp/pairs.jsonl")
    validate(cfg)
    return cfg


def _check(cfg, expected: dict[str, Any], where: str) -> None:
    for key, want in expected.items():
        got = OmegaConf.select(cfg, key, throw_on_missing=True)
        if isinstance(want, tuple):
            assert got in want, f"{where}: {key}={got!r}, the paper's is one of {want}"
        elif isinstance(want, float):
            assert got == pytest.approx(want), f"{where}: {key}={got!r}, the paper's is {want!r}"
        else:
            assert got == want, f"{where}: {key}={got!r}, the paper's is {want!r}"


def _check_sft(cfg, stages: dict[str, dict[str, Any]], where: str) -> None:
    for stage, expected in stages.items():
        _check(cfg, {f"sft.{stage}.{k}": v for k, v in expected.items()}, where)


def test_the_table_covers_every_paper_experiment():
    files = sorted(p.stem for p in (REPO / "experiments").glob("*_paper*.yaml"))
    assert files == sorted(PAPER) == sorted(SFT)


@pytest.mark.parametrize("experiment", sorted(PAPER))
def test_paper_experiment_resolves_to_the_papers_values(compose_cfg, experiment):
    cfg = _compose(compose_cfg, f"+experiment={experiment}")
    _check(cfg, PAPER[experiment], experiment)
    _check_sft(cfg, SFT[experiment], experiment)
    from bft.pipeline.roles import resolve

    resolved = resolve(cfg)
    for role, model in ROLE_MODELS.get(experiment, {}).items():
        assert OmegaConf.select(resolved, ROLE_PATHS[role]) == model, f"{experiment}: {role} model"
    for key, want in WHERE_PRESENT.get(experiment, {}).items():
        if OmegaConf.select(cfg, key, default="<absent>") != "<absent>":
            _check(cfg, {key: want}, experiment)
    assert OmegaConf.missing_keys(cfg) == set()


def test_paper_rewriters_do_not_prefill_the_res_tag(compose_cfg):
    """method.md "Pipeline" 6: the aligned model returns its answer between [RES] and [/RES] itself."""
    for rewriter in ("llama2_70b_chat", "llama2_7b_chat"):
        cfg = compose_cfg(f"rewriter={rewriter}")
        assert cfg.rewriter.prefill_res_tag is False and cfg.rewriter.keep_unparsed is False
        _check(cfg, {"rewriter.temperature": 1.0, "rewriter.top_p": 0.9}, rewriter)


def test_method_humpback_selects_the_papers_score_5_curation(compose_cfg):
    cfg = compose_cfg("method=humpback")
    _check(cfg, CURATE_5 | {"curation.iterations": 2, "rewriter.name": "none"}, "method=humpback")


# --- sweeps: each point as the sweep gives it, on the experiment its header names ------------------------------


def _points(compose_cfg, sweep: str) -> list[tuple[str, str]]:
    params = compose_cfg(f"+sweep={sweep}", hydra_cfg=True).hydra.sweeper.params
    return [(key, value) for key, values in params.items() for value in str(values).split(",")]


@pytest.mark.parametrize("experiment", ["humpback_paper", "backandforth_paper"])
def test_data_scale_points_train_hb_steps_for_their_size(compose_cfg, experiment):
    """HB "steps by data size N" for 3.2K .. 51.2K generated pairs, batch 32."""
    points = _points(compose_cfg, "data_scale")
    sizes = []
    for key, value in points:
        cfg = _compose(compose_cfg, f"+experiment={experiment}", "+sweep=data_scale", f"{key}={value}")
        n = cfg.data.max_generated
        sizes.append(n)
        steps, batch = HB_STEPS[n]
        _check(cfg, {"sft.final.max_steps": steps, "sft.final.batch_size": batch}, f"data_scale {value}")
        if experiment == "humpback_paper":
            _check_sft(cfg, {"final": hb(n), "backward": hb(3200), "seed": hb(3200)}, f"data_scale {value}")
    assert sizes == [3200, 6400, 12800, 25600, 51200]


def test_seed_size_points_use_batch_8_below_3000_pairs(compose_cfg):
    """HB: batch 8 below 3,000 examples; steps 100 -> 30, 800 -> 300, 1,600 -> 600, 3,200 -> 500."""
    sizes = []
    for key, value in _points(compose_cfg, "seed_size"):
        cfg = _compose(compose_cfg, "+experiment=backandforth_paper", "+sweep=seed_size", f"{key}={value}")
        n = cfg.seed.size
        sizes.append(n)
        for stage in ("backward", "seed"):
            assert cfg.sft[stage].batch_size == (8 if n < 3000 else 32), f"seed_size {n}: sft.{stage}.batch_size"
            if n in HB_STEPS:
                assert cfg.sft[stage].max_steps == HB_STEPS[n][0], f"seed_size {n}: sft.{stage}.max_steps"
        _check_sft(cfg, {"final": BFT_7B_FINAL}, f"seed_size {n}")  # the final model trains on 12.8K + seed
    assert sizes == [100, 200, 400, 800, 1600, 3200]


def test_lr_steps_points_stay_on_bfts_step_grid(compose_cfg):
    """BFT 7B: best of {600, 900, 1200} steps."""
    steps = set()
    for key, value in _points(compose_cfg, "lr_steps"):
        cfg = _compose(compose_cfg, "+experiment=backandforth_paper", "+sweep=lr_steps", f"{key}={value}")
        steps.add(cfg.sft.final.max_steps)
        _check(cfg, {f"sft.final.{k}": v for k, v in BFT_ANY.items()}, f"lr_steps {key}={value}")
    assert steps == {600, 900, 1200}


def test_corpus_points_are_bfts_ablation_at_3200_pairs(compose_cfg):
    """method.md "Corpora": the corpus ablation at 3.2K pairs, Llama-2-7B (C4 66.83, Dolma head 67.92)."""
    sources = []
    for key, value in _points(compose_cfg, "corpus"):
        cfg = _compose(compose_cfg, "+experiment=backandforth_paper", "+sweep=corpus", f"{key}={value}")
        _check(cfg, {"data.max_generated": 3200, "model.name": LLAMA2_7B}, f"corpus {value}")
        sources.append(cfg.corpus.source)
    assert sources == ["allenai/c4", "allenai/dolma"]


def test_curation_points_are_hbs_a4_a5_by_one_and_two_rounds(compose_cfg):
    """method.md "Pipeline" 5: A4 (score >= 4) and A5 (score 5); HB iterates M0 -> M1."""
    seen = set()
    for key, value in _points(compose_cfg, "curation"):
        cfg = _compose(compose_cfg, "+experiment=humpback_paper", "+sweep=curation", f"{key}={value}")
        _check(cfg, {"curation.scoring": "generate", "curation.top_fraction": None}, f"curation {key}={value}")
        seen.add((key, str(value)))
    assert seen == {("curation.threshold", "4.0"), ("curation.threshold", "5.0"), ("curation.iterations", "1")} | {
        ("curation.iterations", "2")
    }
