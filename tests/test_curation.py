"""Self-curation: score parsing, prompts, expected scores, selection, accounting and label quality."""

from __future__ import annotations

import math

import pytest

from bft.curation.metrics import binarize_labels, curation_accounting, selection_quality
from bft.curation.select import select
from bft.parsers import parse_rewrite, parse_rewrite_completion, parse_score
from bft.prompts import (
    BACKTRANSLATION_TEMPLATE,
    SCORE_PREFILL,
    backtranslation_prompt,
    rating_prompt,
    render_chat,
    rewrite_prompt,
    with_tag,
)
from bft.tasks import answer_rewrite
from bft.tasks.pair_rating import expected_score


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("The answer is relevant.\nScore: 5", 5),
        ("Reasoning...\nscore: 3", 3),
        ("Score: 4/5", 4),
        ("**Score:** 2", 2),
        ("Score: 2 at first, but on reflection\nScore: 4", 4),
        ("I would give it a 4.", None),
        ("Score: 7", None),
        ("", None),
    ],
)
def test_parse_score(text, score):
    assert parse_score(text) == score


@pytest.mark.parametrize(
    ("text", "finished", "output", "status"),
    [
        ("Sure! [RES]The answer.[/RES] bye", False, "The answer.", "parsed"),  # closed: counts even if cut later
        ("Sure! [RES]The answer.[/RES] bye", True, "The answer.", "parsed"),
        ("[res] lower case tags [/res]", False, "lower case tags", "parsed"),
        ("[RES] an answer that ended by itself", True, "an answer that ended by itself", "parsed"),  # EOS
        ("[RES] unfinished answer cut at max_new_tok", False, None, "truncated"),  # cut, no [/RES]
        ("a preamble cut before any tag", False, None, "truncated"),
        ("no tags here", True, None, "unparsed"),
        ("[RES]   [/RES]", True, None, "unparsed"),
        ("[RES]   [/RES]", False, None, "unparsed"),
        ("[/RES] closing tag only", True, None, "unparsed"),
        ("[RES]first[/RES] and [RES]second[/RES]", True, "first", "parsed"),
    ],
)
def test_parse_rewrite_counts_only_whole_rewrites(text, finished, output, status):
    parsed = parse_rewrite_completion(text, finished)
    assert (parsed.output, parsed.status) == (output, status)
    assert parse_rewrite(text, finished) == output


def test_parse_rewrite_defaults_to_an_unfinished_completion():
    assert parse_rewrite("[RES] unfinished answer") is None
    assert parse_rewrite("[RES] done[/RES]") == "done"


class _ScriptedRewriter:
    """Test-only backend: returns the given (text, finished) completions in order."""

    def __init__(self, completions):
        from bft.generation.base import Completion

        self.completions = [Completion(text, 10, 5, finished) for text, finished in completions]
        self.prompts: list[str] = []

    def generate(self, prompts, sampling, seed):
        self.prompts += prompts
        return self.completions[: len(prompts)]


class _TagTokenizer:
    """Test-only stand-in for a tokenizer's chat template."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True, **kwargs):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + ("<assistant>" if add_generation_prompt else "")


def _rewrite_settings(**changed) -> answer_rewrite.Settings:
    from dataclasses import asdict

    from bft.config.schema import RewriterConfig
    from bft.tasks.base import settings_from

    return settings_from(answer_rewrite.Settings, asdict(RewriterConfig(**changed)), model_name="scripted")


def _rewrite(pairs, backend, settings) -> tuple[list[dict], dict[str, int]]:
    rows = answer_rewrite.TASK.run(pairs, settings, backend, _TagTokenizer(), seed=0)
    counts: dict[str, int] = {}
    list(answer_rewrite.TASK.counting(rows, counts))
    return rows, counts


@pytest.mark.parametrize("prefill", [True, False])
def test_answer_rewrite_drops_truncated_and_unparsed_and_counts_them_apart(prefill):
    tag = "" if prefill else "[RES]"  # a prefilled prompt already ends with [RES]
    script = [
        (f"{tag}Good answer.[/RES] trailing", False),
        (f"{tag}cut off in the midd", False),
        ("[/RES]", True),
        (f"{tag}ended by EOS", True),
    ]
    pairs = [{"instruction": f"Q{i}?", "text": f"doc {i}"} for i in range(4)]
    backend = _ScriptedRewriter(script)
    rows, counts = _rewrite(pairs, backend, _rewrite_settings(prefill_res_tag=prefill, max_new_tokens=8))
    assert all(p.endswith("<assistant>[RES]" if prefill else "<assistant>") for p in backend.prompts)
    assert [r["output"] for r in rows] == ["Good answer.", None, None, "ended by EOS"]
    assert [r["rewrite_status"] for r in rows] == ["parsed", "truncated", "unparsed", "parsed"]
    assert counts == {"parsed": 2, "truncated": 1, "unparsed": 1}
    unrewritten: dict[str, int] = {}
    list(answer_rewrite.TASK.counting([{"output": "raw web text"}], unrewritten))
    assert unrewritten == {"parsed": 0, "truncated": 0, "unparsed": 0}

    kept, _ = _rewrite(pairs, _ScriptedRewriter(script), _rewrite_settings(prefill_res_tag=prefill, keep_unparsed=True))
    assert [r["output"] for r in kept] == ["Good answer.", "doc 1", "doc 2", "ended by EOS"]
    assert kept[1]["rewrite_status"] == "truncated"


def test_distill_answers_cut_at_max_new_tokens_are_counted_as_truncated():
    pairs = [{"instruction": "Q?", "text": "doc"}, {"instruction": "R?", "text": "doc2"}]
    backend = _ScriptedRewriter([("A whole answer.", True), ("An answer cut", False)])
    rows, counts = _rewrite(pairs, backend, _rewrite_settings(mode="distill"))
    assert [r["output"] for r in rows] == ["A whole answer.", "An answer cut"]
    assert counts == {"parsed": 1, "truncated": 1, "unparsed": 0}
    assert not any(p.endswith("[RES]") for p in backend.prompts)


def test_prompts_are_the_papers_verbatim():
    prompt = backtranslation_prompt("  Paris is the capital of France. ")
    assert prompt.startswith("Below is a candidate answer to a question or instruction from an user.")
    assert prompt.endswith("Paris is the capital of France.\n\nAnswer in the style of an AI Assistant.")
    assert "{response}" in BACKTRANSLATION_TEMPLATE
    rating = rating_prompt("What is X?", "X is Y.")
    assert 'then write "Score: <rating>" in the last line.\n\nWhat is X?\nX is Y.' in rating
    assert "5: It means it is a perfect answer from an AI Assistant." in rating
    assert 'Score: <rating>" with no reasoning' in rating_prompt("q", "a", score_only=True)
    rewrite = rewrite_prompt("Why?", "Because.")
    assert "Draft Response: Because.\n\nQuestion: Why?" in rewrite
    assert rewrite.endswith("Return the rewritten response between [RES] and [/RES].")
    assert with_tag("Do it.", "Answer with knowledge from web search.") == ("Do it.\n\nAnswer with knowledge from web search.")


def test_render_chat_prompt_is_identical_at_train_and_inference():
    from bft.models.registry import load_tokenizer

    tok = load_tokenizer("tiny")
    user = with_tag("Name a colour.", "Answer in the style of an AI Assistant.")
    train_prompt, completion = render_chat(tok, user, "Blue.")
    infer_prompt, _ = render_chat(tok, user)
    assert train_prompt == infer_prompt
    assert completion.startswith("Blue.") and completion.strip().endswith("<|im_end|>")
    prefilled, _ = render_chat(tok, rating_prompt("q", "a", score_only=True), assistant_prefix=SCORE_PREFILL)
    assert prefilled.endswith("<|im_start|>assistant\nScore: ")


def test_expected_score_from_logprobs():
    score, confidence, probs = expected_score([math.log(p) for p in (0.0001, 0.0001, 0.0001, 0.4997, 0.5)])
    assert score == pytest.approx(4.5, abs=1e-3)
    assert confidence == pytest.approx(0.5, abs=1e-3)
    assert sum(probs) == pytest.approx(1.0)


def test_select_threshold_never_keeps_unparsed_and_top_fraction():
    scored = [5, None, 4.6, 3, 5.0]
    assert select(scored, 5.0, None, None) == [True, False, False, False, True]
    assert select(scored, 4.5, None, None) == [True, False, True, False, True]
    assert select(scored, None, 2, None) == [True, False, False, False, True]
    assert select(scored, None, None, 0.6) == [True, False, True, False, True]
    with pytest.raises(ValueError):
        select(scored, None, None, None)


def test_accounting_counts_parse_failures_and_lengths():
    acc = curation_accounting([5, None, 2.4], [10, 20, 30], [True, False, False])
    assert acc["parse_failures"] == 1 and acc["parse_failure_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert acc["score_histogram"] == {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1}
    assert acc["kept"] == 1 and acc["kept_lengths"]["mean_chars"] == 10
    assert acc["dropped_lengths"]["n"] == 2 and acc["dropped_lengths"]["mean_chars"] == 25


def test_selection_quality_on_a_hand_made_example():
    labels = [1, 1, 0, 0, 1, 0]
    keep = [True, False, True, False, True, False]
    scores = [5, 3, 4, 1, 5, None]
    quality = selection_quality(labels, keep, scores)
    assert quality["precision"] == pytest.approx(2 / 3, abs=1e-4)  # 2 of 3 kept are good
    assert quality["recall"] == pytest.approx(2 / 3, abs=1e-4)  # 2 of 3 good are kept
    # AUC by hand: positives {5, 3, 5}, negatives {4, 1, 0}; pairs won: 5>all(3)+3>{1,0}(2)+5>all(3) = 8 of 9
    assert quality["auc"] == pytest.approx(8 / 9, abs=1e-4)


def test_binarize_labels_handles_both_scales():
    assert binarize_labels([0, 1, 1]) == [0, 1, 1]
    assert binarize_labels([1, 3, 4, 5]) == [0, 0, 1, 1]
