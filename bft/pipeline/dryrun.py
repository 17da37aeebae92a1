"""``run.dry_run=true``: the steps a config would run, their models, records, tokens and artifact keys (cached or
not), which model plays each role, and the estimated accelerator-hours. Nothing is computed or loaded."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from bft.artifacts.store import ArtifactStore
from bft.pipeline.cost import Work, total_hours
from bft.pipeline.plan import build_plan
from bft.pipeline.roles import resolve, roles
from bft.pipeline.target import first_budget, plan_line, with_budget
from bft.pipeline.workload import Workload, tensor_parallel_size


def plan_table(cfg: DictConfig) -> list[dict[str, Any]]:
    """One row per step: what it reads and writes, its artifact key, whether it is in the store, and its work.

    Keys are derived without running anything: upstream keys come from the keys computed for earlier steps.
    """
    cfg = with_budget(cfg, first_budget(cfg))  # with a data target: round 1, the documents it reads
    store = ArtifactStore(cfg.run.artifacts_dir)
    plan = build_plan(cfg)
    works = Workload(resolve(cfg), plan).works()
    keys: dict[str, str] = {}
    rows = []
    for step, work in zip(plan, works, strict=True):
        upstream = {logical: keys[name] for logical, name in step.upstream.items()}
        key = store.key_for(step.stage.name, step.config, upstream, step.stage.version)
        keys[step.name] = key
        rows.append(
            {
                "step": step.name,
                "stage": step.stage.name,
                "reads": dict(step.upstream),
                "writes": list(step.stage.writes),
                "key": key,
                "cached": (store.path_for(step.stage.name, key) / "manifest.json").exists(),
                "work": work,
            }
        )
    return rows


def _number(value: int | float | None) -> str:
    if value is None:
        return "?"
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _hours(work: Work, gpu: str, mfu: float) -> str:
    hours, unknown = total_hours([work], gpu, mfu)
    return "-" if work.kind == "none" else ("?" if unknown else f"{hours:.3g}")


def print_plan(cfg: DictConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    gpu, mfu = cfg.run.cost.gpu, cfg.run.cost.mfu
    rows = plan_table(cfg)
    table = Table(title="plan (dry run)")
    for column in ("step", "reads", "model", "records", "tokens", "work", f"{gpu} h", "artifact", "status"):
        table.add_column(column)
    for row in rows:
        work: Work = row["work"]
        table.add_row(
            row["step"],
            ", ".join(row["reads"].values()) or "-",
            f"{work.model} ({_number(work.params)})" if work.model else "-",
            _number(work.records),
            _number(work.tokens),
            work.kind,
            _hours(work, gpu, mfu),
            f"{row['stage']}/{row['key']}",
            "cached" if row["cached"] else "to compute",
        )
    console = Console(width=160)
    console.print(table)
    models = roles(cfg)
    tp = tensor_parallel_size(cfg)
    rewriter = models["rewriter"] or "none (the kept text is the answer)"
    console.print(
        f"models: backward {models['backward']}, curation {models['curation']}, final {models['final']}, "
        f"rewriter {rewriter} (tensor parallel {tp}), judge {models['judge']}"
    )
    if plan_line(cfg):
        console.print(plan_line(cfg))
    hours, unknown = total_hours([r["work"] for r in rows], gpu, mfu)
    console.print(
        f"estimated cost: {hours:.3g} {gpu} GPU-hours at {mfu:.0%} MFU (run.cost.gpu, run.cost.mfu; FLOPs = 2·params·tokens "
        "to generate, 6· full fine-tuning, 4· LoRA; tokens are upper-bound estimates)"
        + (f"; size unknown for: {', '.join(unknown)}" if unknown else "")
    )
