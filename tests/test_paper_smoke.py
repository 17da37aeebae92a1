"""Every paper experiment end to end under ``debug=paper_smoke`` (``pytest -k paper_smoke``).

The real config of each ``experiments/*_paper*.yaml`` is composed with ``debug=paper_smoke`` (sizes only) and run
in-process by ``run_pipeline``: the oasst1 seed builder and the corpus reader read small local files in the hub
formats written here, every model role is a tiny random Llama saved without a chat template, training is full
fine-tuning with the experiment's schedule, curation generates the rubric's "Score: N" and keeps by the threshold,
rewrites are parsed from ``[RES]...[/RES]``, and alpaca_eval runs the experiment's annotator config.

A random model cannot write a rating, a rewrite or an answer, and no API judge is reachable, so two TEST-ONLY
doubles stand in for the text they would produce (nothing in ``bft`` or the CLI can select them):
``ScriptedBackend`` (patched over the generation backend factory that ``bft.pipeline.models.backend_for``
calls) answers the real rendered prompts with rubric-, rewrite- and answer-shaped completions, and
``scripted_gpt4_judge`` (patched over alpaca_eval's ``openai_completions`` decoder) returns GPT-4-ranking-shaped
completions that alpaca_eval's own ``ranking_parser`` reads.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

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


def _tag(prompt: str) -> int:
    return zlib.crc32(prompt.encode())


class ScriptedBackend:
    """TEST-ONLY generation backend: shaped completions for the pipeline's real prompts (see the module docstring).

    Ratings: ``Score: 5`` for most pairs, ``Score: 3`` or no score for some (by a hash of the prompt), so the
    threshold and the parse-failure count are exercised. Rewrites: ``[RES]...[/RES]``, and for some pairs a
    completion cut before ``[/RES]`` (``finished=False``), which must be counted as truncated and dropped.
    """

    built: list[dict[str, Any]] = []  # every backend the pipeline asked for, in order
    prompts: dict[str, list[str]] = {}  # kind -> rendered prompts received

    def __init__(self, gen_cfg, model_name: str, adapter: str | None = None) -> None:
        from bft.models.registry import load_tokenizer

        self.tokenizer = load_tokenizer(model_name)  # the real tokenizer and prompt format of this role
        self.counts: dict[str, float] = {"new_tokens": 0, "sequences": 0}
        ScriptedBackend.built.append({"backend": gen_cfg.backend, "model": model_name, "adapter": adapter})

    @staticmethod
    def kind(prompt: str) -> str:
        if "Write the most likely question" in prompt:
            return "backtranslate"
        if "Please assign a score using the following 5-point scale" in prompt:
            return "rate"
        if "Given the draft response to the provided question below" in prompt:
            return "rewrite"
        return "answer"

    def _complete(self, prompt: str) -> tuple[str, bool]:
        kind, tag = self.kind(prompt), _tag(prompt)
        ScriptedBackend.prompts.setdefault(kind, []).append(prompt)
        if kind == "backtranslate":
            return f"What should a reader know about topic {tag % 100003}?", True
        if kind == "rate":
            verdicts = ["Complete, focused and helpful.\nScore: 5", "Helpful but written as a blog post.\nScore: 3"]
            verdicts += ["Complete and well organised.\nScore: 5", "It reads well, I would keep it."]
            return verdicts[tag % 4], True
        if kind == "rewrite":
            if tag % 5 == 0:
                return "[RES]A rewritten answer that was cut before its closing t", False
            return f"Here it is.\n[RES]A rewritten, focused answer number {tag}.[/RES]", True
        return f"A helpful answer ({tag}) written by the assistant.", True

    def generate(self, prompts, sampling, seed):
        from bft.generation.base import Completion

        out = []
        for prompt in prompts:
            text, finished = self._complete(prompt)
            out.append(Completion(text, len(prompt), len(text.split()), finished))
        self.counts["sequences"] += len(out)
        self.counts["new_tokens"] += sum(c.new_tokens for c in out)
        return out

    def next_token_logprobs(self, prompts, candidates):
        raise AssertionError("the paper experiments rate in generate mode; next_token_logprobs must not be called")

    def stats(self) -> dict[str, Any]:
        return dict(self.counts)


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

_WORDS = [
    "river",
    "garden",
    "engine",
    "castle",
    "harbor",
    "valley",
    "market",
    "library",
    "orchard",
    "bridge",
    "forest",
    "meadow",
    "canyon",
    "island",
    "village",
    "tower",
    "glacier",
    "desert",
    "lagoon",
    "quarry",
    "vineyard",
    "observatory",
    "lighthouse",
    "monastery",
    "railway",
    "workshop",
]


def _document(i: int) -> str:
    """About 900 characters of plain prose with its own vocabulary (passes the cleaning heuristics, no duplicates)."""
    rng = random.Random(i)
    place, thing = rng.sample(_WORDS, 2)
    lines = []
    for k in range(6):
        a, b = rng.sample(_WORDS, 2)
        lines.append(
            f"The {place} number {i} keeps a record of the {thing} and its {a} near the {b}, and visitors in year "
            f"{1900 + 7 * i + k} wrote that the {a} changed the way people used the {thing}."
        )
    return f"A short history of the {place} {i}\n\n" + "\n".join(lines)


def write_oasst1(path: Path, n_trees: int = 8) -> Path:
    """oasst1 message rows: each tree a prompter root and two ranked assistant replies, plus a German tree."""
    rows = []
    for t in range(n_trees):
        root = f"root-{t}"
        rows.append({"message_id": root, "parent_id": None, "message_tree_id": f"tree-{t}", "role": "prompter",
                     "text": f"How does the {_WORDS[t]} number {t} work?", "lang": "en", "rank": None,
                     "deleted": False, "review_result": True})  # fmt: skip
        for rank in (1, 0):
            rows.append({"message_id": f"reply-{t}-{rank}", "parent_id": root, "message_tree_id": f"tree-{t}",
                         "role": "assistant", "text": f"Reply of rank {rank}: the {_WORDS[t]} {t} works well.",
                         "lang": "en", "rank": rank, "deleted": False, "review_result": True})  # fmt: skip
    rows.append({"message_id": "root-de", "parent_id": None, "message_tree_id": "tree-de", "role": "prompter",
                 "text": "Wie geht das?", "lang": "de", "rank": None, "deleted": False, "review_result": True})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_corpus(path: Path, kind: str, n: int = 10) -> Path:
    """Records as the hub streams them: Dolma v1 (id, text, added, created, source) or C4 (text, timestamp, url)."""
    rows = []
    for i in range(n):
        if kind == "dolma":
            rows.append({"id": f"cc-head-{i:04d}", "text": _document(i), "added": "2023-05-01T00:00:00Z",
                         "created": "2019-03-01T00:00:00Z", "source": "common-crawl"})  # fmt: skip
        else:
            rows.append({"text": _document(i), "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.org/c4/{i}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------ fixtures


def _has_chat_template_setting() -> bool:
    from bft.config.schema import ModelConfig

    return "chat_template" in {f.name for f in fields(ModelConfig)}


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
    AutoModelForCausalLM.from_pretrained(source).save_pretrained(folder)
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

    ScriptedBackend.built, ScriptedBackend.prompts = [], {}
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
            "seed": ("source", "hub_dataset", "language", "size_scope"),
            "corpus": ("source", "hub_config", "text_field", "id_field", "min_chars", "max_chars", "segment", "dedup"),
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
    from omegaconf import OmegaConf

    from bft.pipeline.runner import run_pipeline

    full = _compose_plain(experiment)
    files = tmp_path / "hub_format"
    files.mkdir()
    corpus_kind = "c4" if "c4" in str(full["corpus"]["source"]) else "dolma"
    # paper_smoke makes every role and the rewriter the base model: the tiny Llama given here
    overrides = [
        f"model.name={tiny_llama}",
        f"seed.hub_dataset={write_oasst1(files / 'oasst1_train.jsonl')}",
        f"corpus.source={write_corpus(files / f'{corpus_kind}.jsonl', corpus_kind)}",
        f"run.artifacts_dir={tmp_path / 'artifacts'}",
    ]
    if full["corpus"].get("tokenizer"):  # the token-length filter's tokenizer (a hub id) -> the local tiny Llama's
        overrides.append(f"corpus.tokenizer={tiny_llama}")
    if full["data"]["baseline_file"] is not None:  # baseline_dataset_paper: ??? until given
        baseline = files / "alpaca_gpt4.jsonl"
        rows = [{"instruction": f"Baseline instruction {i}?", "output": f"Baseline output {i}."} for i in range(6)]
        baseline.write_text("".join(json.dumps(r) + "\n" for r in rows))
        overrides.append(f"data.baseline_file={baseline}")
    cfg = _compose(experiment, [o for o in overrides if o])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ctx = run_pipeline(cfg, run_dir)

    stages = [r.stage for r in ctx.reports]
    assert stages[0] == "seed" and stages[-1] == "evaluate" and not any(r.reused for r in ctx.reports)
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
        assert docs and all(d["id"].startswith("cc-head-") or d["url"].startswith("https://example.org/c4/") for d in docs)
        assert len(ScriptedBackend.prompts["backtranslate"]) == len(docs)
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
    assert all("5-point scale" in p for p in ScriptedBackend.prompts["rate"])


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
    expected_truncated = sum(_tag(p) % 5 == 0 for p in prompts)
    assert counts["truncated"] == expected_truncated and counts["parsed"] == counts["in"] - expected_truncated
    assert counts["out"] == counts["parsed"] and all(r["output"].startswith("A rewritten, focused answer") for r in generated)
