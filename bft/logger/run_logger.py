"""W&B for a pipeline run: a ``pipeline`` job (config, per-stage metrics, samples, final win rate) plus one job per
computed stage (``job_type`` = the stage) whose output artifact uses its inputs' artifacts (bft.logger.lineage).

All jobs of one run - and of every run of a sweep - share a W&B group: ``logger.group`` (sweeps set it), else the
run's name and time. Each job is named after the run and the command-line overrides that define it
(``backandforth[rewriter=none,seed.size=100]``, ``.../rewrite``), each override also a tag, so the runs of a sweep
read as its ablations. ``logger.mode``: ``offline`` (default; ``wandb sync <run folder>/wandb/offline-run-*``
later), ``online``, or ``disabled`` (no W&B at all). Every job is finished, also when the pipeline fails.

Secrets are redacted by value: any config or metadata string holding a secret bft reads from the environment (the
variable named by ``eval.judge_api_key_env``, ``OPENAI_API_KEY``, ``WANDB_API_KEY``, ``HF_TOKEN``) is replaced;
keys are never redacted by name, so ``max_new_tokens`` or ``judge_api_key_env`` (a variable's name) stay visible.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from bft.artifacts.store import Artifact
from bft.config.schema import LoggerConfig
from bft.logger import lineage

log = logging.getLogger(__name__)

SECRET_ENV_VARS = ("OPENAI_API_KEY", "WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
REDACTED = "<redacted>"
# overrides that say where or how a run is stored or logged, not what it is: left out of names and tags
_NOT_ABLATION = ("run.artifacts_dir", "run.dry_run", "hydra.", "hydra/", "logger", "workers", "tags=")
_MAX_TAG = 64  # W&B's limit on a tag's length


def secret_values(config: dict[str, Any]) -> list[str]:
    """The values of the secrets bft reads from the environment (the judge's key variable among them)."""
    judge_key_env = (config.get("eval") or {}).get("judge_api_key_env")
    names = [*SECRET_ENV_VARS, *([judge_key_env] if judge_key_env else [])]
    return [os.environ[n] for n in names if len(os.environ.get(n, "")) >= 8]


def redact(payload: Any, secrets: list[str]) -> Any:
    """``payload`` with every string that holds one of ``secrets`` replaced, recursively."""
    if isinstance(payload, dict):
        return {k: redact(v, secrets) for k, v in payload.items()}
    if isinstance(payload, list | tuple):
        return [redact(v, secrets) for v in payload]
    if isinstance(payload, str) and any(secret in payload for secret in secrets):
        return REDACTED
    return payload


def job_overrides() -> list[str]:
    """The command-line overrides that define this job (a sweep's ablation), as Hydra recorded them."""
    try:
        from hydra.core.hydra_config import HydraConfig

        task = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    except (ImportError, ValueError):
        task = []
    return [o.lstrip("+~") for o in task if not o.lstrip("+~").startswith(_NOT_ABLATION)]


def job_name(name: str, overrides: list[str]) -> str:
    return f"{name}[{','.join(overrides)}]" if overrides else name


def _flatten(prefix: str, payload: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(_flatten(name, value))
        elif isinstance(value, int | float | bool) or value is None:
            flat[name] = value
    return flat


def default_group(name: str, run_dir: Path) -> str:
    """The jobs of one run share a group; so do all runs of one Hydra multirun (named after its sweep folder)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            return f"{name}-{Path(HydraConfig.get().sweep.dir).name}"
    except ImportError:
        pass
    return f"{name}-{run_dir.name}"


class RunLogger:
    def __init__(
        self,
        cfg: LoggerConfig,
        run_dir: Path,
        config: dict[str, Any],
        name: str,
        tags: list[str] | None = None,
        overrides: list[str] | None = None,
    ):
        self.cfg = cfg
        self.run = None
        self.dir: Path | None = None
        self.group: str | None = None
        self.runs = 0  # W&B runs this pipeline created: the pipeline job and one per computed stage
        self.linked: list[Path] = []  # store folders already in the lineage graph
        if cfg.mode == "disabled" or cfg.backend != "wandb":
            return
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        overrides = job_overrides() if overrides is None else overrides
        self.name = job_name(name, overrides)
        self.run_dir = run_dir
        self.secrets = secret_values(config)
        self.group = cfg.group or default_group(name, run_dir)
        self.tags = list(dict.fromkeys([*cfg.tags, *(tags or []), *(o[:_MAX_TAG] for o in overrides)]))
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=self.group,
            job_type="pipeline",
            tags=self.tags,
            name=self.name,
            mode=cfg.mode,
            dir=str(run_dir),
            config=redact(config, self.secrets),
            reinit="create_new",
        )
        self.runs = 1
        self.dir = Path(self.run.dir).parent

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def log_stage(self, stage: str, counts: dict[str, Any], metrics: dict[str, Any], seconds: float, reused: bool):
        if not self.run:
            return
        payload = _flatten(stage, {"counts": counts, "metrics": metrics, "seconds": seconds, "reused": int(reused)})
        self.run.log(payload)

    def log_step(self, step: str, artifact: Artifact, upstream: dict[str, Artifact], seconds: float) -> None:
        """The pipeline job's per-stage metrics; a job of the stage's type if it was computed; the lineage links."""
        counts, metrics = artifact.manifest.get("counts", {}), artifact.manifest.get("metrics", {})
        self.log_stage(step, counts, metrics, seconds, artifact.reused)
        if not self.run:
            return
        self.linked.append(artifact.path.resolve())
        try:
            if not artifact.reused:
                self._stage_job(step, artifact, upstream, seconds)
            # the pipeline job links every artifact it ran on, computed or reused
            lineage.use(self.run, artifact, self.cfg.upload_artifacts)
        except Exception as err:  # W&B trouble must not fail a pipeline whose work is done and stored
            log.warning("W&B: %s not logged: %s", step, err)

    def _stage_job(self, step: str, artifact: Artifact, upstream: dict[str, Artifact], seconds: float) -> None:
        import wandb

        job = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            group=self.group,
            job_type=artifact.stage,
            name=f"{self.name}/{step}",
            tags=self.tags,
            mode=self.cfg.mode,
            dir=str(self.run_dir),
            config=redact({"step": step, "key": artifact.key, "stage": artifact.manifest.get("config", {})}, self.secrets),
            reinit="create_new",
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )
        self.runs += 1
        try:
            for logical in sorted(upstream):
                lineage.use(job, upstream[logical], self.cfg.upload_artifacts)
            job.log(_flatten("", {"counts": artifact.manifest.get("counts", {}), "metrics": artifact.manifest.get("metrics", {})}))
            job.summary["seconds"] = seconds
            columns, rows = lineage.sample_rows(artifact, self.cfg.sample_rows)
            if rows:
                job.log({"samples": wandb.Table(columns=columns, data=rows)})
            job.log_artifact(lineage.wandb_artifact(artifact, self.cfg.upload_artifacts))
        finally:
            job.finish()

    def log_table(self, key: str, rows: list[dict[str, Any]], columns: list[str]):
        if not self.run or not rows:
            return
        import wandb

        table = wandb.Table(columns=columns)
        for row in rows[: self.cfg.sample_rows]:
            table.add_data(*[str(row.get(c, ""))[:2000] for c in columns])
        self.run.log({key: table})

    def log_histogram(self, key: str, histogram: dict[str, int]):
        if not self.run:
            return
        import wandb

        table = wandb.Table(data=[[k, v] for k, v in histogram.items()], columns=["score", "count"])
        self.run.log({key: wandb.plot.bar(table, "score", "count", title=key)})

    def log_artifact(self, name: str, kind: str, path: Path, upstream: list[str] | None = None):
        """Datasets and adapters as W&B artifacts; lineage through ``use_artifact`` of the upstream ones."""
        if not self.run:
            return
        if any(path.resolve().is_relative_to(folder) for folder in self.linked):
            return  # part of a stage artifact its job logged (with its lineage): no second copy
        import wandb

        for ref in upstream or []:
            try:
                self.run.use_artifact(ref)
            except Exception as err:  # offline runs cannot resolve artifacts logged by other runs
                log.debug("lineage link to %s skipped: %s", ref, err)
        artifact = wandb.Artifact(name=re.sub(r"[^A-Za-z0-9_.-]", "-", name), type=kind)
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def describe(self) -> dict[str, Any] | None:
        """What the summary says of W&B: the group, how many runs this pipeline made, and where they are."""
        if self.dir is None:
            return None
        return {"group": self.group, "name": self.name, "runs": self.runs, "dir": str(self.dir.parent), "mode": self.cfg.mode}

    def summary(self, values: dict[str, Any]):
        if self.run:
            for key, value in values.items():
                self.run.summary[key] = value

    def finish(self, exit_code: int = 0):
        if self.run:
            self.run.finish(exit_code=exit_code)
            self.run = None
