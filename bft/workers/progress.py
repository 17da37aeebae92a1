"""One progress display per generation stage: records done, new tokens/s and ETA.

Scoring stages (logprob curation) generate no tokens: once their first records are in, the rate is records/s.

On a terminal it is a single rich progress bar; when stderr is not a TTY (CI logs, Slurm output files) it is a few
plain log lines instead: at the start, about every 10% of the records (at most one a minute otherwise) and at the
end. The figures come from the shard folder, so the same display follows in-process and remote workers.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from bft.artifacts.shards import shard_path
from bft.workers.job import stats_path

log = logging.getLogger("bft.progress")


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class StageProgress:
    """Track finished shards of one stage and show them. ``poll()`` rescans; ``close()`` prints the last figures."""

    def __init__(
        self,
        label: str,
        work: Path,
        n_records: int,
        shard_size: int,
        *,
        tty: bool | None = None,
        clock=time.monotonic,
        min_log_seconds: float = 60.0,
    ) -> None:
        self.label, self.work, self.n_records, self.shard_size = label, work, n_records, shard_size
        self.n_shards = -(-n_records // shard_size) if n_records else 0
        self.clock = clock
        self.started = clock()
        self.done_shards: set[int] = {i for i in range(self.n_shards) if shard_path(work, i).exists()}
        self.records_done = sum(self._shard_records(i) for i in self.done_shards)
        self.start_records = self.records_done
        self.new_tokens = 0.0
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.min_log_seconds = min_log_seconds
        self._last_log_time = self.started
        self._last_decile = -1
        self._bar = None
        if self.tty and self.n_shards:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("records"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._bar.add_task(label, total=n_records, completed=self.start_records, rate="- new tok/s")
            self._bar.start()
        else:
            self._log(force=True)

    def _shard_records(self, index: int) -> int:
        return min(self.shard_size, self.n_records - index * self.shard_size)

    @property
    def elapsed(self) -> float:
        return max(self.clock() - self.started, 1e-9)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.elapsed

    @property
    def records_per_second(self) -> float:
        return (self.records_done - self.start_records) / self.elapsed

    def rate(self) -> str:
        """New tokens/s; records/s for a stage whose finished records generated no tokens (scoring)."""
        if self.new_tokens == 0 and self.records_done > self.start_records:
            return f"{self.records_per_second:,.2f} records/s"
        return f"{self.tokens_per_second:,.0f} new tok/s"

    def eta_seconds(self) -> float | None:
        new = self.records_done - self.start_records
        if new <= 0:
            return None
        return (self.n_records - self.records_done) * self.elapsed / new

    def poll(self) -> None:
        """Pick up shards other processes finished since the last call."""
        for index in range(self.n_shards):
            if index not in self.done_shards and shard_path(self.work, index).exists():
                self._count(index)
        self._show()

    def shard_done(self, index: int) -> None:
        """This process just finished shard ``index``."""
        self._count(index)
        self._show()

    def _count(self, index: int) -> None:
        self.done_shards.add(index)
        self.records_done += self._shard_records(index)
        stats = stats_path(self.work, index)
        if stats.exists():
            self.new_tokens += float(json.loads(stats.read_text()).get("new_tokens", 0))

    def _show(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.records_done, rate=self.rate())
        else:
            self._log()

    def line(self) -> str:
        done = self.records_done
        percent = 100.0 * done / self.n_records if self.n_records else 100.0
        return f"{self.label}: {done}/{self.n_records} records ({percent:.0f}%), {self.rate()}, ETA {_eta(self.eta_seconds())}"

    def _log(self, force: bool = False) -> None:
        fraction = self.records_done / self.n_records if self.n_records else 1.0
        decile, now = int(fraction * 10), self.clock()
        if force or decile > self._last_decile or (fraction < 1.0 and now - self._last_log_time >= self.min_log_seconds):
            log.info(self.line())
            self._last_log_time, self._last_decile = now, decile

    def close(self) -> dict[str, Any]:
        """Stop the bar; return the stage's rate for its metrics (and so for W&B)."""
        self.poll()
        if self._bar is not None:
            self._bar.stop()
        elif self._last_decile < 10:
            self._log(force=True)
        return {
            "new_tokens_per_s": round(self.tokens_per_second, 2),
            "records_per_s": round(self.records_per_second, 3),
            "generation_wall_seconds": round(self.elapsed, 2),
        }
