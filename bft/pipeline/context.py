"""What a run holds: the composed config (for the summary; stages get only their slice), the artifact store, the
run folder, the logger, and each step's report and artifact."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bft.artifacts.store import Artifact, ArtifactStore
from bft.errors import PipelineError
from bft.logger.run_logger import RunLogger

__all__ = ["PipelineError", "RunContext", "StageReport"]


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
    target: dict[str, Any] | None = None  # data.max_generated: reached or short, documents read (bft.pipeline.target)
