"""Generation tasks, one module each: what one generation stage asks of a model, declared in one place
(:class:`bft.tasks.base.GenerationTask`). ``TASKS`` maps a job's ``task`` (``bft.workers.job.ShardJob``) to it.

- ``instruction_backtranslation``: the augment stage's instructions for documents;
- ``pair_rating``: the curate stage's 1-5 ratings of (instruction, document) pairs;
- ``answer_rewrite``: the rewrite stage's answers (a rewritten document, or a distilled answer);
- ``eval_answer``: the eval_outputs and base_outputs stages' answers to the eval set.
"""

from __future__ import annotations

from bft.tasks import answer_rewrite, eval_answer, instruction_backtranslation, pair_rating
from bft.tasks.base import GenerationTask

TASKS: dict[str, GenerationTask] = {
    task.name: task for task in (instruction_backtranslation.TASK, pair_rating.TASK, answer_rewrite.TASK, eval_answer.TASK)
}

__all__ = ["TASKS", "GenerationTask"]
