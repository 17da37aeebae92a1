"""The corpus stage on datatrove: ``build_corpus(cfg, on_error, out_file) -> counts``.

One pipeline per task streams its share of the input through the filters (nothing holds the corpus in memory):
read (validate) -> [language] -> clean -> [bucket, max tokens, Gopher, C4, FineWeb] -> segment -> [headers]
-> length -> [context] -> write (``context``: documents whose longest prompt would not fit its model's context,
:mod:`bft.data.corpus.context`); with ``corpus.dedup`` the MinHash stages follow (signatures in the same pass, then buckets,
clusters and the filter). Task outputs are concatenated in task order into ``corpus.jsonl``, so the corpus is
byte-identical whatever ``corpus.workers`` is. ``filters.json`` beside it keeps every filter's counts by reason
and a few removed examples. Scratch files live in ``_datatrove/`` next to the output (an interrupted run resumes
from its finished tasks) and are removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.writers import JsonlWriter

from bft.config.schema import CorpusConfig
from bft.context_budget import PromptBudget
from bft.data.corpus import accounting as acc
from bft.data.corpus.context import ContextFilter
from bft.data.corpus.dedup import later_stages, minhash_config, signature_step
from bft.data.corpus.executor import check_executor, make_executor, run_chain
from bft.data.corpus.langid import LanguageIdFilter, OfflineEnglishTokenizer
from bft.data.corpus.readers import Source, make_reader, resolve_source
from bft.data.corpus.steps import BucketFilter, CleanFilter, HeaderFilter, LengthFilter, MaxTokensFilter, SegmentStep
from bft.data.io import DataError, check_on_error

log = logging.getLogger(__name__)

STANDARD_FILTERS = ("gopher_repetition", "gopher_quality", "c4", "fineweb", "humpback")
RECORD_FIELDS = ("id", "text", "url", "source", "source_id")


def bft_record(self: Any, document: Document) -> dict[str, Any]:
    """The corpus record bft's later stages read (a datatrove writer adapter)."""
    meta = document.metadata
    return {
        "id": document.id,
        "text": document.text,
        "url": meta.get("url", ""),
        "source": meta.get("source", ""),
        "source_id": meta.get("source_id", document.id),
    }


def _standard_filter(name: str, exclusion: Any) -> Any:
    from datatrove.pipeline import filters

    english = OfflineEnglishTokenizer()
    if name == "gopher_repetition":
        return filters.GopherRepetitionFilter(exclusion_writer=exclusion, language=english)
    if name == "gopher_quality":
        return filters.GopherQualityFilter(exclusion_writer=exclusion, language=english)
    if name == "c4":
        return filters.C4QualityFilter(exclusion_writer=exclusion, language=english)
    return filters.FineWebQualityFilter(exclusion_writer=exclusion, language=english)


@dataclass
class Chain:
    """The steps of the main pipeline with a label each, and the filters whose removals are reported."""

    steps: list[Any] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)

    def add(self, label: str, step: Any, is_filter: bool = False) -> None:
        self.steps.append(step)
        self.labels.append(label)
        if is_filter:
            self.filters.append(label)


def _check(cfg: CorpusConfig) -> None:
    unknown = [name for name in cfg.filters if name not in STANDARD_FILTERS]
    if unknown:
        raise DataError("corpus.filters", f"unknown filter {unknown[0]!r}; choose from {STANDARD_FILTERS}", "config")
    if "humpback" in cfg.filters and cfg.segment_by != "headers":
        raise DataError("corpus.filters", "'humpback' filters headers: set corpus.segment_by=headers", "config")
    if (cfg.tokenizer is None) != (cfg.max_tokens is None):
        raise DataError("corpus.max_tokens", "corpus.tokenizer and corpus.max_tokens go together", "config")


def main_chain(
    cfg: CorpusConfig, source: Source, on_error: str, tasks: int, scratch: str, budgets: list[PromptBudget] | None = None
) -> Chain:
    """reader -> filters -> segment -> length -> [context] -> writer (+ MinHash signatures when deduplicating)."""

    def examples(label: str) -> acc.ExampleWriter:
        return acc.ExampleWriter(f"{scratch}/examples/{label}", cfg.filter_examples)

    chain = Chain()
    for k, step in enumerate(make_reader(source, cfg, on_error, tasks)):
        chain.add("reader" if k == 0 else "extract", step)
    chain.add("clean", CleanFilter(cfg, exclusion_writer=examples("clean")), True)
    if cfg.languages:
        chain.add("language", LanguageIdFilter(cfg.languages, cfg.language_threshold, examples("language")), True)
    if cfg.perplexity_bucket and cfg.bucket_field:  # else the bucket was chosen by file name (resolve_source)
        chain.add("bucket", BucketFilter(cfg.perplexity_bucket, examples("bucket")), True)
    if cfg.tokenizer and cfg.max_tokens:
        chain.add("max_tokens", MaxTokensFilter(cfg.tokenizer, cfg.max_tokens, examples("max_tokens")), True)
    for name in cfg.filters:
        if name != "humpback":
            chain.add(name, _standard_filter(name, examples(name)), True)
    chain.add("segment", SegmentStep(cfg.max_chars if cfg.segment else None, cfg.segment_by))
    if "humpback" in cfg.filters:
        chain.add("humpback", HeaderFilter(exclusion_writer=examples("humpback")), True)
    chain.add("length", LengthFilter(cfg.min_chars, cfg.max_chars, examples("length")), True)
    if budgets:
        chain.add("context", ContextFilter(budgets, examples("context")), True)
    if cfg.dedup:
        chain.add("filtered", JsonlWriter(f"{scratch}/filtered", output_filename="${rank}.jsonl", compression=None))
        chain.add("signatures", signature_step(f"{scratch}/signatures", minhash_config(cfg.minhash_threshold, cfg.minhash_num_perm)))
    else:
        chain.add("writer", _final_writer(scratch))
    return chain


@contextlib.contextmanager
def _datatrove_log(path: Path) -> Iterator[None]:
    """Send datatrove's console output (per-task logs, stats banners, progress bars) to ``path``, so the run's
    console shows bft's one-line summary and a failing record's one-line error, not datatrove's tracebacks."""
    from datatrove.utils.logging import setup_default_logger

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as sink, contextlib.redirect_stderr(sink):
        setup_default_logger()  # loguru keeps the stream it was given: point it at the file now ...
        try:
            yield
        finally:
            sys.stderr.flush()
    setup_default_logger()  # ... and back at the console afterwards


def _final_writer(scratch: str) -> JsonlWriter:
    return JsonlWriter(f"{scratch}/output", output_filename="${rank}.jsonl", compression=None, adapter=bft_record)


def _merge(scratch: Path, tasks: int, out_file: Path) -> int:
    """Concatenate the task outputs in task order into ``out_file`` (atomically); returns the line count."""
    tmp = out_file.with_name(out_file.name + ".tmp")
    lines = 0
    with tmp.open("wb") as out:
        for rank in range(tasks):
            part = scratch / "output" / f"{rank:05d}.jsonl"
            if part.is_file():
                with part.open("rb") as handle:
                    for line in handle:
                        out.write(line)
                        lines += 1
    os.replace(tmp, out_file)
    return lines


def build_corpus(
    cfg: CorpusConfig | Mapping[str, Any], on_error: str, out_file: Path, budgets: list[PromptBudget] | None = None
) -> dict[str, Any]:
    """Build the cleaned corpus into ``out_file`` (JSONL of :data:`RECORD_FIELDS`) and ``filters.json`` beside it.

    ``budgets``: the generation prompts each document must fit in (:mod:`bft.context_budget`); None checks none.

    Returns the stage counts ``{"in", "out", "removed": {...per reason and filter}, "skipped_input": {...}}``.
    """
    if not isinstance(cfg, CorpusConfig):
        cfg = CorpusConfig(**dict(cfg))
    check_on_error(on_error)
    check_executor(cfg.executor, cfg.workers, dict(cfg.executor_options))
    _check(cfg)
    source = resolve_source(cfg)
    tasks = cfg.tasks or source.default_tasks
    out_file = Path(out_file)
    scratch = out_file.parent / "_datatrove"
    chain = main_chain(cfg, source, on_error, tasks, str(scratch), budgets)
    opts = dict(cfg.executor_options)

    def executor(name: str, steps: list[Any], n_tasks: int, depends: Any = None) -> Any:
        return make_executor(
            cfg.executor, steps, tasks=n_tasks, workers=cfg.workers, logging_dir=str(scratch / "logs" / name),
            options=opts, depends=depends, job_name=f"bft-corpus-{name}",
        )  # fmt: skip

    last = main = executor("main", chain.steps, tasks)
    if cfg.dedup:
        config = minhash_config(cfg.minhash_threshold, cfg.minhash_num_perm)
        dedup_examples = acc.ExampleWriter(f"{scratch}/examples/near_duplicate", cfg.filter_examples)
        stages = later_stages(str(scratch), config, str(scratch / "filtered"), dedup_examples)
        buckets = executor("buckets", stages["buckets"], config.num_buckets, depends=main)
        clusters = executor("clusters", stages["clusters"], 1, depends=buckets)
        last = executor("filter", [*stages["filter"], _final_writer(str(scratch))], tasks, depends=clusters)
    with _datatrove_log(scratch / "logs" / "console.log"):
        run_chain(last, "corpus")
    return _account(cfg, source, chain, tasks, scratch, out_file, budgets)


def _account(
    cfg: CorpusConfig, source: Source, chain: Chain, tasks: int, scratch: Path, out_file: Path, budgets: list[PromptBudget] | None
) -> dict[str, Any]:
    main_stats = acc.read_stats(str(scratch / "logs" / "main"))
    by_label = dict(zip(chain.labels, main_stats, strict=True))
    reader = by_label["reader"]
    if acc.stat_total(reader, "documents") == 0:
        raise DataError(source.name, "no documents loaded", "empty")
    entries = [
        acc.filter_entry(label, by_label[label], acc.examples_of(scratch / "examples" / label, tasks, cfg.filter_examples))
        for label in chain.filters
    ]
    if cfg.dedup:
        dedup_stats = acc.read_stats(str(scratch / "logs" / "filter"))[1]
        examples = acc.examples_of(scratch / "examples" / "near_duplicate", tasks, cfg.filter_examples)
        entries.append(acc.filter_entry("near_duplicate", dedup_stats, examples))
    kept = _merge(scratch, tasks, out_file)
    noise = acc.stat_total(by_label["clean"], "noise_lines")
    segment = by_label["segment"]
    extra = {
        "noise_lines": noise,
        "segmented": acc.stat_total(segment, "segmented"),
        "segments": acc.stat_total(segment, "segments"),
        "kept": kept,
    }
    removed = acc.stage_counts(entries, reader, extra)
    skipped = acc.skipped_input(reader)
    report = {
        "source": source.name,
        "format": source.format,
        "files": len(source.files),
        "tasks": tasks,
        "executor": cfg.executor,
        "counts": removed,
        "skipped_input": skipped,
        "filters": entries,
        "context_budget": [b.as_dict() for b in budgets or []],
    }
    tmp = out_file.with_name("filters.json.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out_file.with_name("filters.json"))
    shutil.rmtree(scratch, ignore_errors=True)
    log.info(
        "corpus: %d documents in, %d kept; removed by filter: %s", removed["input"], kept, {e["filter"]: e["removed"] for e in entries}
    )
    return {"in": removed["input"], "out": kept, "removed": removed, "skipped_input": skipped}
