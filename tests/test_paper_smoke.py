"""Every paper experiment end to end under ``debug=paper_smoke`` (``pytest -k paper_smoke``).

The real config of each ``experiments/*_paper*.yaml`` is composed with ``debug=paper_smoke`` (sizes only) and run
in-process by ``run_pipeline``: the oasst1 seed builder and the corpus reader read small local copies of the hub
data in their real layouts (``tests/helpers/hub_mirrors.py``: oasst1's Parquet files, Dolma's URL list and files,
C4's ``en/`` files) through ``seed.mirror`` / ``corpus.mirror``, every model role is a tiny random Llama saved
without a chat template, training is full fine-tuning with the experiment's schedule, curation generates the
rubric's "Score: N" and keeps by the threshold, rewrites are parsed from ``[RES]...[/RES]``, and alpaca_eval runs
the experiment's annotator config.

A random model cannot write a rating, a rewrite or an answer, and no API judge is reachable, so two TEST-ONLY
doubles stand in for the text they would produce (nothing in ``bft`` or the CLI can select them):
``ScriptedBackend`` (tests/helpers/scripted_backend.py, patched over the generation backend factory that
``bft.pipeline.models.backend_for`` calls) answers the real rendered prompts with rubric-, rewrite- and
answer-shaped completions within the real limits (the context of the tiny Llama, shrunk to 1,024 positions, and
``max_new_tokens``, measured with the real tokenizer), and
``scripted_gpt4_judge`` (patched over alpaca_eval's ``openai_completions`` decoder) returns GPT-4-ranking-shaped
completions that alpaca_eval's own ``ranking_parser`` reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from helpers.hub_mirrors import document, write_c4, write_dolma, write_oasst1
from helpers.scripted_backend import LONG_WORDS, ScriptedBackend, prompt_tag

from bft.data.io import read_jsonl

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)

REPO = Path(__file__).resolve().parents[1]
PAPER_EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*_paper*.yaml"))
FAKE_KEY = "sk-test-only-not-a-real-key"
# Llama-2's [INST] format, only for a checkout whose ModelConfig has no chat_template setting yet (see tiny_llama)
LLAMA2_INST_JINJA = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)

# ------------------------------------------------------------------------------------------ test-only doubles

JUDGE_CALLS: list[dict[str, Any]] = []
_ANSWER = re.compile(r'"answer": """(.*?)"""', re.DOTALL)


def scripted_gpt4_judge(prompts, model_name: str, **kwargs) -> dict[str, list]:
    """TEST-ONLY stand-in for alpaca_eval's ``openai_completions``: ranks the longer answer first, as a
    GPT-4-ranking-shaped completion (``[{'model': 'model_1', 'rank': 1}, ...]``)."""
    JUDGE_CALLS.append({"model_name": model_name, "n": len(prompts), **kwargs})
    completions = []
    for prompt in prompts:
        first, second = _ANSWER.findall(prompt)[:2]
        best = "model_1" if len(first) >= len(second) else "model_2"
        other = "model_2" if best == "model_1" else "model_1"
        completions.append(f"[{{'model': '{best}', 'rank': 1}}, {{'model': '{other}', 'rank': 2}}]")
    return {"completions": completions, "price_per_example": [0.0] * len(prompts), "time_per_example": [0.0] * len(prompts)}


# ------------------------------------------------------------------------------------------ hub-format files


def write_hub_corpus(root: Path, kind: str, extra: dict[str, str] | None = None) -> list[str]:
    """The corpus overrides for a local copy of the experiment's hub corpus in its real layout: Dolma's URL list
    and mirror (head, middle and tail files mixed: only cc_en_head is read), or C4's en/ train files; ``extra``:
    documents by name, first in the first file read (the name ends the id, or the URL)."""
    if kind == "dolma":
        url_list, mirror = write_dolma(root / "dolma", shards=2, docs=5, extra=extra)
        return [f"corpus.url_list={url_list}", f"corpus.mirror={mirror}"]
    return [f"corpus.mirror={write_c4(root / 'c4', shards=2, docs=5, extra=extra)}"]


def document_of_tokens(tokenizer, n_tokens: int, first: int) -> str:
    """Prose of exactly ``n_tokens`` tokens (as the corpus stage counts them: stripped, no special tokens): the
    longest word prefix of the bodies of ``document(first)``, ``document(first + 1)``, ... within ``n_tokens``,
    padded with one-token words."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    bodies = "\n".join(document(first + k).split("\n\n", 1)[1] for k in range(n_tokens // 40 + 2))
    words = bodies.split(" ")
    low, high = 1, len(words)
    while low < high:  # the most words whose prose stays within n_tokens
        mid = (low + high + 1) // 2
        low, high = (mid, high) if count(" ".join(words[:mid])) <= n_tokens else (low, mid - 1)
    text = " ".join(words[:low])
    while count(text) < n_tokens:
        text += " a"
    assert count(text) == n_tokens, f"no prose of exactly {n_tokens} tokens"
    return text


def edge_documents(cfg) -> tuple[dict[str, str], list]:
    """Two documents at the context edge of ``cfg``'s tightest prompt: ``edge-in`` has exactly as many tokens
    as the corpus stage's budget allows, ``edge-over`` one more. Returns them and the budgets."""
    from bft.context_budget import prompt_budgets
    from bft.models.registry import load_tokenizer
    from bft.pipeline.roles import resolve
    from bft.pipeline.stages.data import CORPUS, prompt_specs

    c = CORPUS.config_slice(resolve(cfg))
    budgets = prompt_budgets(prompt_specs(c), c.generation.backend, c.generation.max_model_len)
    tightest = min(budgets, key=lambda b: b.max_document_tokens)
    tokenizer = load_tokenizer(tightest.model, "chatml")  # counting the document needs no particular template
    n = tightest.max_document_tokens
    return {"edge-in": document_of_tokens(tokenizer, n, 5000), "edge-over": document_of_tokens(tokenizer, n + 1, 7000)}, budgets


# ------------------------------------------------------------------------------------------ fixtures


def _has_chat_template_setting() -> bool:
    from bft.config.schema import ModelConfig

    return "chat_template" in {f.name for f in fields(ModelConfig)}


CONTEXT = 1024


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """The registry's tiny random Llama re-saved WITHOUT a chat template: the prompt format must come from
    ``model.chat_template`` (llama2_inst in conf/model/llama2_*.yaml). On a checkout without that setting the
    tokenizer gets Llama-2's [INST] template instead, so the run still uses the papers' format."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bft.models.registry import resolve_model_path

    source = resolve_model_path("tiny")
    folder = tmp_path_factory.mktemp("tiny_llama") / "tiny-llama-no-template"
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.chat_template = None if _has_chat_template_setting() else LLAMA2_INST_JINJA
    model = AutoModelForCausalLM.from_pretrained(source)
    model.config.max_position_embeddings = CONTEXT  # a shrunk context: documents at its edge stay short
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if _has_chat_template_setting():
        assert json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template") is None
        assert not (folder / "chat_template.jinja").exists()
    return folder


@pytest.fixture
def scripted(monkeypatch):
    """Install the test-only backend and judge; give the API judge's readiness check a fake key."""
    import alpaca_eval.decoders.openai as ae_openai

    import bft.pipeline.models as pipeline_models

    ScriptedBackend.reset()
    JUDGE_CALLS.clear()
    monkeypatch.setattr(pipeline_models, "make_backend", ScriptedBackend)
    monkeypatch.setattr(ae_openai, "openai_completions", scripted_gpt4_judge)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)


def _compose(experiment: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from bft.config.schema import register_configs
    from bft.config.validate import validate

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+experiment={experiment}", "debug=paper_smoke", *overrides])
    validate(cfg)
    return cfg


def test_every_paper_experiment_has_a_paper_smoke_test():
    """test_paper_smoke is parametrised over the experiment files themselves: a new one is smoke-tested unasked."""
    assert len(PAPER_EXPERIMENTS) >= 7
    assert {"backandforth_paper", "humpback_paper", "distill_paper", "backandforth_70b_paper"} <= set(PAPER_EXPERIMENTS)


def test_paper_smoke_shrinks_sizes_only(monkeypatch):
    """Everything but sizes, models' names, the eval set and the CPU trainer equals the experiment's own config."""
    from omegaconf import OmegaConf

    for experiment in PAPER_EXPERIMENTS:
        paper = OmegaConf.to_container(_compose(experiment, []), resolve=False)
        full = _compose_plain(experiment)
        for key in ("method", "tags"):
            assert paper[key] == full[key], (experiment, key)
        for group, keys in {
            "curation": ("enabled", "scoring", "threshold", "top_k", "top_fraction", "iterations", "temperature", "top_p"),
            "rewriter": ("mode", "temperature", "top_p", "prefill_res_tag", "keep_unparsed"),
            "peft": ("method",),
            "seed": ("source", "hub_dataset", "hub_files", "language", "size_scope"),
            "corpus": ("source", "url_list", "glob", "perplexity_bucket", "text_field", "id_field", "min_chars", "max_chars")
            + ("segment", "dedup"),
            "generation": ("dtype",),
            "eval": ("annotator", "reference", "inference_tag", "temperature", "top_p"),
        }.items():
            for key in keys:
                assert paper[group][key] == full[group][key], (experiment, f"{group}.{key}")
        for stage in ("backward", "seed", "final"):
            for key in ("lr", "lr_floor_ratio", "schedule", "warmup_ratio", "weight_decay", "dropout", "grouping"):
                assert paper["sft"][stage][key] == full["sft"][stage][key], (experiment, f"sft.{stage}.{key}")
        assert paper["sft"]["seed_tag"] == full["sft"]["seed_tag"] and paper["sft"]["web_tag"] == full["sft"]["web_tag"]
        for key in [k for k in full["model"] if k != "name"]:
            assert paper["model"][key] == full["model"][key], (experiment, f"model.{key}")


def _compose_plain(experiment: str) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from bft.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+experiment={experiment}"])
    return OmegaConf.to_container(cfg, resolve=False)


# ------------------------------------------------------------------------------------------ the smoke runs


@pytest.mark.parametrize("experiment", PAPER_EXPERIMENTS)
def test_paper_smoke(experiment, tiny_llama, scripted, tmp_path):
    """In this process, one device. backandforth_paper on 2 processes through the CLI (each training stage a
    launched DDP job): tests/test_multidevice.py."""
    _paper_smoke(experiment, tiny_llama, tmp_path)


def _paper_smoke(experiment: str, tiny_llama: Path, tmp_path: Path, extra: list[str] | None = None):
    from omegaconf import OmegaConf

    from bft.pipeline.runner import run_pipeline

    full = _compose_plain(experiment)
    files = tmp_path / "hub_format"
    files.mkdir()
    corpus_kind = "c4" if "c4" in str(full["corpus"]["source"]) else "dolma"
    # paper_smoke makes every role and the rewriter the base model: the tiny Llama given here
    overrides = [
        f"model.name={tiny_llama}",
        f"seed.mirror={write_oasst1(files / 'oasst1')}",
        *write_hub_corpus(files, corpus_kind),
        f"run.artifacts_dir={tmp_path / 'artifacts'}",
    ]
    if full["corpus"].get("tokenizer"):  # the token-length filter's tokenizer (a hub id) -> the local tiny Llama's
        overrides.append(f"corpus.tokenizer={tiny_llama}")
    if full["data"]["baseline_file"] is not None:  # baseline_dataset_paper: ??? until given
        baseline = files / "alpaca_gpt4.jsonl"
        rows = [{"instruction": f"Baseline instruction {i}?", "output": f"Baseline output {i}."} for i in range(6)]
        baseline.write_text("".join(json.dumps(r) + "\n" for r in rows))
        overrides.append(f"data.baseline_file={baseline}")
    cfg = _compose(experiment, [o for o in overrides if o] + list(extra or []))
    if not cfg.data.baseline_file:  # two documents at the context edge of the tightest prompt: one fits, one does not
        edges, budgets = edge_documents(cfg)
        write_hub_corpus(files, corpus_kind, extra=edges)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ctx = run_pipeline(cfg, run_dir)

    # with a data target the steps up to train_data run in rounds ("seed (round 2)" reuses round 1's seed)
    stages = [r.stage.split(" (round ")[0] for r in ctx.reports]
    first_round = [r for r in ctx.reports if " (round " not in r.stage or r.stage.endswith(" (round 1)")]
    assert stages[0] == "seed" and stages[-1] == "evaluate" and not any(r.reused for r in first_round)
    art = ctx.artifacts

    # the seed builder read oasst1 message trees: first turns, English, the rank-0 reply
    seed = read_jsonl(art["seed"].file("seed.jsonl"))
    assert len(seed) == cfg.seed.size and all(r["output"].startswith("Reply of rank 0") for r in seed)

    # every generation went through the experiment's backend settings, with the papers' prompt format, on the
    # tiny Llama (every role, the rewriter included)
    assert {b["backend"] for b in ScriptedBackend.built} <= {cfg.generation.backend}
    trained = str(tmp_path / "artifacts")  # fully fine-tuned models generate from their artifact folders
    assert {b["model"] for b in ScriptedBackend.built if not b["model"].startswith(trained)} <= {str(tiny_llama)}
    for kind, prompts in ScriptedBackend.prompts.items():
        bad = [p for p in prompts if "[INST]" not in p or not p.rstrip().endswith("[/INST]")]
        assert not bad, f"{kind} prompt not in the [INST] format: {bad[0][-300:]!r}"

    if cfg.data.baseline_file:
        assert "corpus" not in art and "rewrite" not in art
    else:
        docs = read_jsonl(art["corpus"].file("corpus.jsonl"))
        assert docs and all(d["id"].startswith("cc_en_head-") or d["url"].startswith("https://example.org/c4/train/") for d in docs)
        assert len(set(ScriptedBackend.prompts["backtranslate"])) == len(docs)  # rounds re-read a longer prefix
        _check_context_edge(ctx, docs, budgets)
        _check_augment(ctx)
        _check_curation(cfg, art)
        _check_rewrite(cfg, art)

    # full fine-tuning: the final model is a whole save_pretrained folder trained on seed + generated pairs
    final = art["final_model"]
    assert final.manifest["is_adapter"] is False and (final.file("model") / "config.json").is_file()
    assert final.manifest["metrics"]["steps"] == cfg.sft.final.max_steps
    train = read_jsonl(art["train_data"].file("train.jsonl"))
    assert sum(r["origin"] == "generated" for r in train) <= cfg.data.max_generated

    # alpaca_eval ran the experiment's annotator config (GPT-4 ranking), scripted judge in place of the API
    leaderboard = json.loads((art["evaluate"].path / "leaderboard.json").read_text())
    assert leaderboard["annotator"] == cfg.eval.annotator == "alpaca_eval_gpt4"
    assert leaderboard["n_total"] == cfg.eval.max_instances and 0.0 <= leaderboard["win_rate"] <= 100.0
    assert JUDGE_CALLS and {c["model_name"] for c in JUDGE_CALLS} == {"gpt-4"}
    assert OmegaConf.select(cfg, "trainer.strategy") == "ddp"
    return ctx


def _check_context_edge(ctx, docs: list[dict], budgets: list) -> None:
    """The document one token past the tightest prompt's budget is dropped by the corpus stage and counted (in
    filters.json and the run summary); the one at the budget is kept, and no generation of the run was left less
    room than it asked for (the scripted backend measures each prompt with the real tokenizer)."""
    names = [d["id"] if d["id"].startswith("cc_en_head-") else d["url"] for d in docs]
    assert any(n.endswith("edge-in") for n in names) and not any(n.endswith("edge-over") for n in names)
    report = json.loads(ctx.artifacts["corpus"].file("filters.json").read_text())
    context = next(f for f in report["filters"] if f["filter"] == "context")
    tightest = min(budgets, key=lambda b: b.max_document_tokens)
    assert context["removed"] == 1 and context["reasons"] == {f"too_long_for_{tightest.kind}": 1}
    assert [e["id"].endswith("edge-over") for e in context["examples"]] == [True]
    assert [b["kind"] for b in report["context_budget"]] == [b.kind for b in budgets]
    assert ctx.summary["corpus_filters"]["removed"]["context"] == 1
    assert ScriptedBackend.calls and {c["context"] for c in ScriptedBackend.calls} == {CONTEXT}
    squeezed = [c for c in ScriptedBackend.calls if c["prompt_tokens"] + c["max_new_tokens"] > c["context"]]
    assert not squeezed, squeezed[:3]


def _check_augment(ctx) -> None:
    """Instructions cut at max_new_tokens (the script's rambling ones) are dropped and counted."""
    prompts = list(dict.fromkeys(ScriptedBackend.prompts["backtranslate"]))  # a later round re-reads a longer prefix
    rambling = sum(prompt_tag(p) % 7 == 3 for p in prompts)
    counts = ctx.artifacts["augment"].manifest["counts"]
    assert counts["unfinished_instructions"] == rambling and counts["out"] == len(prompts) - rambling
    assert ctx.summary["unfinished"]["instructions"] == rambling
    candidates = read_jsonl(ctx.artifacts["augment"].file("candidates.jsonl"))
    assert all(r["backward_finished"] and LONG_WORDS[:40] not in r["instruction"] for r in candidates)


def _check_curation(cfg, art) -> None:
    """Generate-mode rating with the rubric; kept = score >= threshold; one curate step per iteration."""
    curate = [name for name in art if name.startswith("curate_")]
    if not cfg.curation.enabled:
        assert not curate and "rate" not in ScriptedBackend.prompts
        return
    assert len(curate) == cfg.curation.iterations
    for name in curate:
        scored = read_jsonl(art[name].file("scored.jsonl"))
        assert scored and all(r["scoring"] == "generate" for r in scored)
        for r in scored:
            assert r["kept"] == (r["score"] is not None and r["score"] >= cfg.curation.threshold), r["judge_raw"]
        assert any(r["score"] is None for r in scored) or len(scored) < 4
        metrics = art[name].manifest["metrics"]
        assert metrics["parse_failures"] == sum(r["score"] is None for r in scored)
        assert metrics["unfinished_ratings"] == sum(r["judge_unfinished"] for r in scored)
        assert all(r["score"] is None for r in scored if r["judge_unfinished"])
    prompts = ScriptedBackend.prompts["rate"]  # every round's and every iteration's ratings
    assert all("5-point scale" in p for p in prompts)
    # the script's long reasonings run out of max_new_tokens before "Score:": counted and dropped
    long_reasoning = sum(prompt_tag(p) % 5 == 4 for p in prompts)  # over every round's ratings
    unfinished = sum(art[name].manifest["metrics"]["unfinished_ratings"] for name in curate)  # the last round's
    assert unfinished <= long_reasoning and (unfinished > 0 or long_reasoning == 0)


def _check_rewrite(cfg, art) -> None:
    """Rewrites count only when closed by [/RES]; truncated and unparsed are counted apart."""
    counts = art["rewrite"].manifest["counts"]
    generated = read_jsonl(art["rewrite"].file("generated.jsonl"))
    if cfg.rewriter.source == "none":
        assert all(r["output"] == r["text"] for r in generated)
        return
    if cfg.rewriter.mode == "distill":
        assert "rewrite" not in ScriptedBackend.prompts and len(ScriptedBackend.prompts["answer"]) >= counts["in"]
        assert all(r["output"].startswith("A helpful answer") for r in generated)
        return
    prompts = ScriptedBackend.prompts["rewrite"]
    assert len(prompts) == counts["in"] and not any(p.rstrip().endswith("[RES]") for p in prompts)  # no prefill
    expected_truncated = sum(prompt_tag(p) % 5 == 0 for p in prompts)
    assert counts["truncated"] == expected_truncated and counts["parsed"] == counts["in"] - expected_truncated
    assert counts["out"] == counts["parsed"] and all(r["output"].startswith("A rewritten, focused answer") for r in generated)
