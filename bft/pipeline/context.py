"""What every stage gets: the composed config, the artifact store, the run folder and the logger."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bft.artifacts.store import Artifact, ArtifactStore
from bft.logger.run_logger import RunLogger


class PipelineError(RuntimeError):
    """A failure with a clear one-line explanation (bad input, empty data, ...)."""


@dataclass
class StageReport:
    stage: str
    key: str
    reused: bool
    records_in: int | None
    records_out: int | None
    seconds: float
    path: Path


@dataclass
class RunContext:
    cfg: DictConfig
    store: ArtifactStore
    run_dir: Path
    logger: RunLogger
    reports: list[StageReport] = field(default_factory=list)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
