"""What a generation task is: one declaration of the model work a generation stage does on each record.

A task names the input fields it reads and the output fields it writes, its typed ``Settings`` (what a worker gets:
``bft.workers.job.ShardJob.settings``, saved in the job file as ``dataclasses.asdict`` and loaded back as the same
``Settings``), how a record becomes a prompt (``render``), how prompts become answers (``complete``: the backend, injected), how an
answer becomes the output record (``parse``, through the pure parsers of :mod:`bft.parsers`, the raw completion
kept beside the parsed value) and the counters its output adds to the stage's accounting. The stage that runs it
(``bft.pipeline.stages``) owns what is around it: which config builds the settings, which model, the files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

from bft.artifacts.shards import shard_seed
from bft.generation.base import Completion, GenerationBackend, Sampling

Record = dict[str, Any]
S = TypeVar("S")


def settings_from(settings: type[S], config: Mapping[str, Any], **given: Any) -> S:
    """``settings`` with each field not ``given`` read from the config node of the same name (a stage's slice)."""
    return settings(**{f.name: config[f.name] for f in fields(settings) if f.name not in given}, **given)


def generate_once(prompts: list[str], settings: Any, backend: GenerationBackend, seed: int) -> list[Completion]:
    """One sampled completion per prompt, with the settings' ``temperature``, ``top_p`` and ``max_new_tokens``."""
    sampling = Sampling(temperature=settings.temperature, top_p=settings.top_p, max_new_tokens=settings.max_new_tokens)
    return backend.generate(prompts, sampling, seed)


@dataclass(frozen=True, eq=False)
class GenerationTask(Generic[S]):
    name: str  # the job's task: a key of bft.tasks.TASKS
    seed_namespace: str  # a shard's sampling seed is shard_seed(run seed, seed_namespace, index); renaming it changes results
    settings: type[S]  # the typed settings a worker gets (a frozen dataclass)
    input_columns: tuple[str, ...]  # fields of an input record it reads
    output_columns: tuple[str, ...]  # fields it writes on (or into) the output record
    render: Callable[[Record, S, Any], str]  # (record, settings, tokenizer) -> the prompt
    parse: Callable[[Record, Any, S], Record]  # (record, answer, settings) -> the output record
    complete: Callable[[list[str], S, GenerationBackend, int], Sequence[Any]] = generate_once  # one answer per prompt
    accounting: Mapping[str, Callable[[Record], int]] = field(default_factory=dict)  # counter -> one output record's share

    def run(self, records: list[Record], settings: S, backend: GenerationBackend, tokenizer: Any, seed: int) -> list[Record]:
        """The output records of ``records`` (one each, in order): one prompt per record, in order."""
        prompts = [self.render(record, settings, tokenizer) for record in records]
        answers = self.complete(prompts, settings, backend, seed)
        return [self.parse(record, answer, settings) for record, answer in zip(records, answers, strict=True)]

    def shard_seed(self, run_seed: int, index: int) -> int:
        return shard_seed(run_seed, self.seed_namespace, index)

    def counting(self, records: Iterable[Record], counts: dict[str, int]) -> Iterator[Record]:
        """``records`` passed through, each one's share added to ``counts`` (every counter, zero when none)."""
        for name in self.accounting:
            counts.setdefault(name, 0)
        return self._counted(records, counts)

    def _counted(self, records: Iterable[Record], counts: dict[str, int]) -> Iterator[Record]:
        for record in records:
            for name, share in self.accounting.items():
                counts[name] += share(record)
            yield record
