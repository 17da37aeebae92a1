"""The engines' own executors, and one line for a failure: what the generation workers (bft.workers.engines) and the
launched training jobs (bft.sft.launch) share, without importing either's work."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# The last line of a Python traceback: ``package.module.SomeError: message`` (or the bare name).
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)(?::\s.*)?$")


def _first_line(err: BaseException | str) -> str:
    """One line for a worker's failure: the exception line of the traceback that submitit or Ray wraps (they end
    with log paths and separators), else the last non-blank line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
    line = raised[-1] if raised else (lines[-1] if lines else type(err).__name__)
    return line[:500]


def _require(module: str, engine: str):
    import importlib

    from bft.pipeline.context import PipelineError

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PipelineError(f"workers.engine={engine} needs the '{module}' package: pip install 'bft[workers]'") from None


def make_executor(folder: Path, cluster: str, params: dict[str, Any]):
    """submitit's own executor for ``cluster`` (local processes, a Slurm array, or debug), logs under ``folder``."""
    submitit = _require("submitit", "submitit")
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    executor.update_parameters(**params)
    return executor
