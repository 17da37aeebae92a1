"""Generation tasks (bft.tasks): one declaration per task, typed settings that reach a worker as the same type,
seed namespaces that stay put (they name every shard's sampling seed), and each task's prompt, parse and counts."""

from __future__ import annotations

import math
from dataclasses import asdict, replace

import pytest
from omegaconf import OmegaConf

from bft.config.schema import CurationConfig, GenerationConfig
from bft.generation.base import Completion
from bft.tasks import TASKS, eval_answer, instruction_backtranslation, pair_rating
from bft.tasks.base import settings_from
from bft.workers import ShardJob, stage_job


class _Tokenizer:
    """Test-only stand-in for a tokenizer's chat template."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True, **kwargs):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + ("<assistant>" if add_generation_prompt else "")


class _Scripted:
    """Test-only backend: fixed completions, or fixed log-probabilities over the candidates."""

    def __init__(self, completions=(), logprobs=()):
        self.completions, self.logprobs, self.prompts = list(completions), list(logprobs), []

    def generate(self, prompts, sampling, seed):
        self.prompts += prompts
        return self.completions[: len(prompts)]

    def next_token_logprobs(self, prompts, candidates):
        self.prompts += prompts
        return self.logprobs[: len(prompts)]


def test_tasks_are_registered_by_name_and_keep_their_seed_namespaces():
    """A seed namespace names the shards' sampling seeds: renaming one changes every result of its stage."""
    assert {name: task.seed_namespace for name, task in TASKS.items()} == {
        "instruction_backtranslation": "augment",
        "pair_rating": "curate",
        "answer_rewrite": "rewrite",
        "eval_answer": "eval",
    }
    assert all(TASKS[name].name == name for name in TASKS)


def test_a_job_file_gives_the_worker_the_stages_typed_settings(tmp_path):
    settings = settings_from(pair_rating.Settings, asdict(CurationConfig(scoring="generate_n")), judge_model="m0")
    generation = OmegaConf.structured(GenerationConfig())
    job = stage_job(generation, 3, "curate", pair_rating.TASK, settings, tmp_path / "in.jsonl", tmp_path, ("tiny", None))
    loaded = ShardJob.load(job.save())
    assert type(loaded.settings) is pair_rating.Settings and loaded.settings == settings
    assert (loaded.task, loaded.stage, loaded.run_seed) == ("pair_rating", "curate", 3)
    with pytest.raises(TypeError, match="pair_rating.Settings, not bft.tasks.eval_answer.Settings"):
        replace(job, task="eval_answer")
    with pytest.raises(ValueError, match="curation.scoring"):
        pair_rating.Settings(**{**asdict(settings), "scoring": "vote"})


def test_logprob_rating_prefills_the_score_and_records_the_judge():
    settings = settings_from(pair_rating.Settings, asdict(CurationConfig(scoring="logprob")), judge_model="m0")
    backend = _Scripted(logprobs=[[math.log(p) for p in (0.1, 0.1, 0.1, 0.2, 0.5)]])
    [rated] = pair_rating.TASK.run([{"id": "d", "instruction": "Q?", "text": "A."}], settings, backend, _Tokenizer(), 0)
    assert backend.prompts[0].endswith("<assistant>Score: ")
    assert rated["score"] == pytest.approx(3.9) and rated["confidence"] == pytest.approx(0.5)
    assert (rated["id"], rated["judge_model"], rated["scoring"]) == ("d", "m0", "logprob")
    counts: dict[str, int] = {}
    assert list(pair_rating.TASK.counting([rated], counts)) == [rated] and counts == {"unfinished_ratings": 0}


def test_backtranslation_counts_unfinished_and_empty_instructions():
    settings = instruction_backtranslation.Settings(1.0, 0.9, 8, keep_unfinished=False, model_key="mb")
    backend = _Scripted([Completion("What is X?", 5, 4, True), Completion("What is", 5, 8, False), Completion(" ", 5, 1, True)])
    docs = [{"id": f"d{i}", "text": f"doc {i}"} for i in range(3)]
    rows = instruction_backtranslation.TASK.run(docs, settings, backend, _Tokenizer(), 0)
    assert [r["instruction"] for r in rows] == ["What is X?", None, None]
    assert rows[0] == {"id": "d0", "text": "doc 0", "instruction": "What is X?", "backward_raw": "What is X?"} | {
        "backward_finished": True,
        "backward_model": "mb",
    }
    counts: dict[str, int] = {}
    list(instruction_backtranslation.TASK.counting(rows, counts))
    assert counts == {"unfinished_instructions": 1, "empty_instructions": 1}


def test_eval_answers_carry_the_tag_and_only_alpaca_eval_fields():
    settings = eval_answer.Settings(0.7, 0.9, 16, tag="Answer well.", generator="g", eval_set="embedded")
    backend = _Scripted([Completion(" An answer. ", 5, 3, True)])
    [row] = eval_answer.TASK.run([{"instruction": "Q?", "extra": 1}], settings, backend, _Tokenizer(), 0)
    assert backend.prompts == ["<user>Q?\n\nAnswer well.<assistant>"]
    assert row == {"instruction": "Q?", "output": "An answer.", "generator": "g", "dataset": "embedded"}


def test_a_too_long_prompt_is_named_by_its_record_and_shard(tmp_path):
    from bft.generation.base import PromptTooLongError
    from bft.workers.job import task_process

    class TooLong(_Scripted):
        def generate(self, prompts, sampling, seed):
            raise PromptTooLongError("prompt 2 of 2 is 99 tokens", 1)

    settings = instruction_backtranslation.Settings(1.0, 0.9, 8, keep_unfinished=False, model_key="mb")
    generation = OmegaConf.structured(GenerationConfig())
    job = stage_job(generation, 0, "augment", instruction_backtranslation.TASK, settings, tmp_path, tmp_path, ("tiny", None))
    process = task_process(job, TooLong(), _Tokenizer())
    with pytest.raises(PromptTooLongError, match="record d1 of shard 5: prompt 2 of 2 is 99 tokens"):
        process([{"id": "d0", "text": "a"}, {"id": "d1", "text": "b"}], 5)
