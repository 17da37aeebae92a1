"""``bft <overrides>`` in the test's own process: the config the command composes (``bft.cli.main._compose``),
run by the pipeline the command runs. For reference runs whose process start-up is not what a test checks."""

from __future__ import annotations

from pathlib import Path

from bft.cli.main import _compose
from bft.pipeline.context import RunContext
from bft.pipeline.runner import run_pipeline


def run_in_process(run_dir: Path, *overrides: str) -> RunContext:
    run_dir.mkdir(parents=True)
    return run_pipeline(_compose(list(overrides)), run_dir)
