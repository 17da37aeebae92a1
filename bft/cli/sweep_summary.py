"""A Hydra callback that prints, where a sweep was started, one line per job from its ``summary.json``.

Under ``hydra/launcher=submitit_slurm`` each job's own table and win rate land in ``.submitit/*_log.out`` on the
cluster; this brings the results back to the terminal that launched the sweep (and to the basic launcher's end).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def sweep_lines(sweep_dir: Path) -> list[str]:
    """One line per job folder of a sweep: its folder name, win rate, pairs trained on, and summary path."""
    lines = []
    for path in sorted(sweep_dir.glob("*/summary.json"), key=lambda p: _job_number(p.parent.name)):
        summary = json.loads(path.read_text())
        win, se = summary.get("win_rate"), summary.get("standard_error")
        rate = "n/a" if win is None else f"{win:.2f}" + (f" ± {se:.2f}" if se is not None else "")
        lines.append(
            f"{path.parent.name}: win rate {rate} vs {summary.get('reference')} (n={summary.get('n')}), "
            f"{summary.get('n_generated')} generated + {summary.get('n_seed')} seed pairs; {path}"
        )
    return lines


def _job_number(name: str) -> int:
    head = name.split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 30


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        lines = sweep_lines(sweep_dir)
        print(f"sweep {sweep_dir}: {len(lines)} job(s) with a summary")
        for line in lines:
            print(f"  {line}")
