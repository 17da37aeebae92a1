"""The training bar: optimizer steps out of ``max_steps`` (not micro-batches of an endless epoch), loss and lr.

Lightning's own bars count micro-batches against ``max_epochs=-1`` (``Epoch 0/-2 ... 48/12``) and round the
learning rate to ``0.000``. This one reads ``trainer.global_step`` (optimizer steps, resumed runs included), the
last logged ``train/loss`` and the optimizer's current learning rate, in scientific notation::

    final_model ━━━━━━━━━━━━━━━━━━━━━━━━━━━ 12/12 steps  0:00:41  loss 1.734  lr 2.00e-05
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar


def format_lr(lr: float | None) -> str:
    return "-" if lr is None or not math.isfinite(lr) else f"{lr:.2e}"


def format_loss(loss: float | None) -> str:
    return "-" if loss is None else f"{loss:.3f}"


class StepProgressBar(ProgressBar):
    """A rich bar in optimizer steps; one finished line per training when the output is not a terminal."""

    def __init__(self, description: str = "training", console: Any = None) -> None:
        super().__init__()
        self.description = description
        self._console = console
        self._enabled = True
        self._progress = None
        self._task = None
        self.last: dict[str, Any] = {}

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.trainer.is_global_zero

    def on_train_start(self, trainer, pl_module) -> None:
        if not self.is_enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self._console or Console(stderr=True),
        )
        self._progress.start()
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        self._task = self._progress.add_task(self.description, total=total, completed=trainer.global_step, metrics="")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._progress is None or self._task is None:
            return
        loss = trainer.callback_metrics.get("train/loss")
        optimizers = trainer.optimizers
        lr = optimizers[0].param_groups[0]["lr"] if optimizers else None
        self.last = {"step": trainer.global_step, "loss": None if loss is None else float(loss), "lr": lr}
        metrics = f"loss {format_loss(self.last['loss'])}  lr {format_lr(lr)}"
        self._progress.update(self._task, completed=trainer.global_step, metrics=metrics)

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None


def training_bars(enabled: bool, description: str) -> list[ProgressBar]:
    """The callbacks to add to a ``lightning.Trainer``: this bar, or none (then pass enable_progress_bar=False)."""
    return [StepProgressBar(description)] if enabled else []
