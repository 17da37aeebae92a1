"""The context budget (bft.context_budget): which prompts a document goes into, the estimate of their length (an
upper bound of the real rendered prompt, close to it), the corpus filter that drops documents past it, and the
parsers that drop generations cut at max_new_tokens.

The end-to-end check (a document at the context edge dropped and counted by the corpus stage of a real paper
pipeline, no stage stopping, every prompt measured by a context-enforcing scripted backend) is in
tests/test_paper_smoke.py (``_check_context_edge``).
"""

from __future__ import annotations

import json
import random

import pytest

from bft.context_budget import (
    BOUNDARY_SLACK,
    ContextBudgetError,
    PromptBudget,
    PromptSpec,
    budget_for,
    count_tokens,
    estimate,
    render,
)
from bft.data.embedded import embedded_file
from bft.models.chat_templates import CHATML, LLAMA2_INST

INSTRUCTION_BUDGET = 64
SPECS = [
    PromptSpec("augment", "m", None, "k", 64),
    PromptSpec("rate", "m", None, "k", 256, INSTRUCTION_BUDGET),
    PromptSpec("rate", "m", None, "k", 1, INSTRUCTION_BUDGET, score_only=True, assistant_prefix="Score: "),
    PromptSpec("rewrite", "m", None, "k", 1024, INSTRUCTION_BUDGET),
    PromptSpec("rewrite", "m", None, "k", 256, INSTRUCTION_BUDGET, assistant_prefix="[RES]"),
]
AWKWARD = [
    "  leading spaces and a trailing newline\n\n",
    "ünïcödé — “quotes” 日本語のテキスト and emoji 🙂",
    "a document that mentions [/INST] and [RES] tags",
    "a document with <|im_end|> in it",
    "\n\nstarts with blank lines",
    "ends with punctuation!!!",
    "x" * 300,
]


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in embedded_file(name).read_text().splitlines() if line.strip()]


def _samples() -> tuple[list[str], list[str]]:
    """Documents (the embedded corpus, prefixes of it cut at random, awkward strings) and instructions."""
    rng = random.Random(0)
    docs = [r["text"] for r in _jsonl("corpus.jsonl")]
    docs += [d[: rng.randrange(1, len(d))] for d in docs[:24]] + AWKWARD
    instructions = [r["instruction"] for r in _jsonl("seed.jsonl")] + AWKWARD
    return docs, instructions


def _sentencepiece_like():
    """A Llama-2-style tokenizer trained here in a second: BPE over the whole text with a dummy-prefix "▁" and
    byte fallback (no pre-tokenizer), so merges can cross the joins of a prompt's pieces."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    docs, instructions = _samples()
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.train_from_iterator(docs + instructions, trainers.BpeTrainer(vocab_size=3000, special_tokens=["<unk>", "<s>", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _check_bound(tokenizer, template: str | None) -> int:
    """Every spec, every sample: real prompt <= estimate; returns the largest gap (estimate - real)."""
    if template is not None:
        tokenizer.chat_template = template
    docs, instructions = _samples()
    lengths = dict(zip(instructions, count_tokens(tokenizer, [i.strip() for i in instructions]), strict=True))
    instructions = [i for i in instructions if lengths[i] <= INSTRUCTION_BUDGET]
    rng = random.Random(1)
    widest = 0
    for spec in SPECS:
        budget = budget_for(spec, tokenizer, context=None)
        pairs = [(d, rng.choice(instructions)) for d in docs]
        real = count_tokens(tokenizer, [render(spec, tokenizer, d, i) for d, i in pairs])
        doc_tokens = count_tokens(tokenizer, [d.strip() for d, _ in pairs])
        for (doc, instruction), n_real, n_doc in zip(pairs, real, doc_tokens, strict=True):
            n_instruction = lengths[instruction] if spec.kind != "augment" else 0
            assert n_real <= estimate(budget, n_doc), (spec, doc[:80], instruction[:80])
            # how far above the real prompt the estimate is, with the instruction at its real length
            widest = max(widest, estimate(budget, n_doc) - n_real - (budget.instruction_tokens - n_instruction))
    return widest


@pytest.mark.parametrize("template", ["llama2_inst", "chatml"])
def test_the_estimate_bounds_the_real_prompt_on_a_sentencepiece_like_tokenizer(template):
    widest = _check_bound(_sentencepiece_like(), {"llama2_inst": LLAMA2_INST, "chatml": CHATML}[template])
    assert widest <= 4 * 2 * BOUNDARY_SLACK


@pytest.mark.slow  # builds the tiny model's folder (SmolLM2's byte-level BPE tokenizer) on a fresh machine
@pytest.mark.parametrize("template", [None, "llama2_inst"])
def test_the_estimate_bounds_the_real_prompt_on_smollm2s_tokenizer(template):
    import copy

    from bft.models.registry import load_tokenizer

    tokenizer = copy.deepcopy(load_tokenizer("tiny", "model"))  # shared in the process: _check_bound sets a template
    widest = _check_bound(tokenizer, None if template is None else LLAMA2_INST)
    assert widest <= 4 * 2 * BOUNDARY_SLACK


def test_the_budget_leaves_room_for_instruction_and_new_tokens_or_refuses():
    tokenizer = _sentencepiece_like()
    tokenizer.chat_template = LLAMA2_INST
    rate = PromptSpec("rate", "m", None, "curation_model.chat_template", 256, 514)
    budget = budget_for(rate, tokenizer, 4096, "generation.max_model_len")
    assert budget.max_document_tokens == 4096 - budget.fixed_tokens - 514 - budget.slack_tokens - 256
    assert estimate(budget, budget.max_document_tokens) + 256 == 4096
    assert budget_for(rate, tokenizer, None).max_document_tokens is None  # unknown context: nothing checked
    with pytest.raises(ContextBudgetError, match="leaves no room for a document"):
        budget_for(rate, tokenizer, 900)


def test_a_template_that_repeats_the_content_is_refused():
    tokenizer = _sentencepiece_like()
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ContextBudgetError, match="2 times"):
        budget_for(SPECS[0], tokenizer, 4096)


# ------------------------------------------------------------------------------------------ which prompts


def _specs(compose_cfg, *overrides: str) -> dict[str, PromptSpec]:
    from bft.pipeline.roles import resolve
    from bft.pipeline.stages.data import CORPUS, prompt_specs

    return {s.kind: s for s in prompt_specs(CORPUS.config_slice(resolve(compose_cfg(*overrides))))}


def test_prompt_specs_follow_the_roles_and_their_limits(compose_cfg):
    default = _specs(compose_cfg)
    assert list(default) == ["augment", "rate", "rewrite"]
    assert default["augment"].new_tokens == 64 and default["rate"].instruction_tokens == 64
    assert default["rate"].new_tokens == 1 and default["rate"].assistant_prefix == "Score: "  # logprob rating
    assert default["rewrite"].new_tokens == 256 and default["rewrite"].assistant_prefix == "[RES]"

    paper = _specs(compose_cfg, "+experiment=backandforth_paper")
    assert paper["augment"].model == "meta-llama/Llama-2-70b-hf" and paper["augment"].chat_template == "llama2_inst"
    assert paper["augment"].new_tokens == 514 and paper["rate"].instruction_tokens == 514
    assert paper["rate"].new_tokens == 256 and not paper["rate"].assistant_prefix
    assert paper["rewrite"].model == "meta-llama/Llama-2-70b-chat-hf" and paper["rewrite"].new_tokens == 1024
    assert paper["rewrite"].template_key == "rewriter.chat_template"

    assert list(_specs(compose_cfg, "rewriter=none")) == ["augment", "rate"]
    assert list(_specs(compose_cfg, "method=distill")) == ["augment", "rate"]  # a distillation prompt holds no document
    assert list(_specs(compose_cfg, "curation=none")) == ["augment", "rewrite"]
    m0 = _specs(compose_cfg, "rewriter=seed_model", "model@curation_model=tiny")["rewrite"]
    assert m0.model == "tiny" and m0.template_key == "curation_model.chat_template"


# ------------------------------------------------------------------------------------------ the corpus filter


@pytest.mark.slow  # loads the tiny model's tokenizer
def test_the_corpus_stage_drops_and_counts_documents_past_the_budget(tmp_path):
    from bft.data.corpus import build_corpus
    from bft.models.registry import load_tokenizer

    tokenizer = load_tokenizer("tiny", "model")
    line = "The river number {} keeps a record of the garden near the bridge, and visitors wrote about it often."
    docs = ["\n".join(line.format(100 * i + k) for k in range(i + 2)) for i in range(12)]  # clean prose, growing
    lengths = count_tokens(tokenizer, [d.strip() for d in docs])
    edge = sorted(lengths)[6]  # documents longer than the median are past the budget
    budgets = [
        PromptBudget("augment", "tiny", 2048, "max_position_embeddings", 50, 0, 4, 64, edge + 100),
        PromptBudget("rewrite", "tiny", 2048, "max_position_embeddings", 175, 64, 8, 256, edge),
    ]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": f"d{i}", "text": d}) + "\n" for i, d in enumerate(docs)))
    cfg = {"source": str(source), "languages": [], "dedup": False, "segment": False, "min_chars": 1, "max_chars": 100000}
    counts = build_corpus(cfg, "raise", tmp_path / "out" / "corpus.jsonl", budgets)
    kept = [json.loads(line) for line in (tmp_path / "out" / "corpus.jsonl").read_text().splitlines()]
    expected = [f"d{i}" for i, n in enumerate(lengths) if n <= edge]
    assert [r["id"] for r in kept] == expected and counts["removed"]["context"] == len(docs) - len(expected)
    report = json.loads((tmp_path / "out" / "filters.json").read_text())
    context = next(f for f in report["filters"] if f["filter"] == "context")
    assert context["reasons"] == {"too_long_for_rewrite": len(docs) - len(expected)}
    assert [b["max_document_tokens"] for b in report["context_budget"]] == [edge + 100, edge]


# ------------------------------------------------------------------------------------------ unfinished generations


def test_unfinished_instructions_and_ratings_do_not_parse():
    from bft.curation.metrics import curation_accounting
    from bft.parsers import parse_instruction, parse_score

    assert parse_instruction("What is a river?", finished=True) == "What is a river?"
    assert parse_instruction("What is a river and why does it", finished=False) is None
    assert parse_score("Good.\nScore: 5", finished=True) == 5
    assert parse_score("Score: 5 would be too much, because", finished=False) is None
    accounting = curation_accounting([5, None, None], [10, 20, 30], [True, False, False], unfinished=1)
    assert accounting["parse_failures"] == 2 and accounting["unfinished_ratings"] == 1


def test_generate_mode_ratings_cut_at_max_new_tokens_are_counted_and_dropped():
    from dataclasses import asdict

    from bft.config.schema import CurationConfig
    from bft.generation.base import Completion
    from bft.tasks.base import settings_from
    from bft.tasks.pair_rating import TASK, Settings

    class Cut:
        def generate(self, prompts, sampling, seed):
            return [Completion("Fine.\nScore: 5", 9, 5, True), Completion("It goes on. Score: 5 if", 9, 8, False)]

    tokenizer = _sentencepiece_like()
    tokenizer.chat_template = CHATML
    pairs = [{"instruction": "Q?", "text": "A."}, {"instruction": "Q2?", "text": "B."}]
    for scoring in ("generate", "generate_n"):
        settings = settings_from(Settings, asdict(CurationConfig(scoring=scoring, n_samples=2)), judge_model="cut")
        scored = TASK.run(pairs, settings, Cut(), tokenizer, seed=0)
        assert [r["score"] for r in scored] == [5, None]
        assert [r["judge_unfinished"] for r in scored] == ([0, 1] if scoring == "generate" else [0, 2])
