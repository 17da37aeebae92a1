"""The run summary: the dict written to summary.json (and W&B), and the table printed at the end of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bft.analysis.corpus_filters import FILTERS_FILE, load_report, removals, removals_text
from bft.eval.calibrate import calibration_note, judge_calibration
from bft.pipeline.context import RunContext
from bft.pipeline.roles import resolve, roles
from bft.pipeline.target import shortfall_line


def _calibration(cfg) -> dict[str, Any] | None:
    """The judge's last measured calibration (``bft-eval calibrate``), or None: shown beside every win rate."""
    return judge_calibration(cfg.eval.annotator, resolve(cfg).eval.judge_model, cfg.eval.judge_orders)


def _corpus_filters(ctx: RunContext) -> dict[str, Any] | None:
    """Documents in and kept, and what each corpus filter removed (``filters.json``); None without a corpus stage."""
    corpus = ctx.artifacts.get("corpus")
    if corpus is None or not corpus.file(FILTERS_FILE).is_file():
        return None
    return removals(load_report(corpus.file(FILTERS_FILE)))


def _decontaminated(counts: dict[str, Any]) -> dict[str, Any]:
    """Seed and generated pairs dropped as overlapping the eval set, by reason."""
    return {origin: counts.get(f"decontaminated_{origin}") for origin in ("seed", "generated")}


def _decontaminated_text(decontaminated: dict[str, Any]) -> str:
    """ "decontaminated against the eval set: seed 1 (exact 1), generated 0" """
    parts = []
    for origin, reasons in decontaminated.items():
        if reasons is not None:
            detail = ", ".join(f"{r} {n}" for r, n in reasons.items() if n)
            parts.append(f"{origin} {sum(reasons.values())}" + (f" ({detail})" if detail else ""))
    return "decontaminated against the eval set: " + "; ".join(parts) if parts else ""


def _target(ctx: RunContext, n_generated: int | None) -> dict[str, Any] | None:
    """The data target's outcome: the rounds' (``bft.pipeline.target``), or for a run without rounds (a baseline
    dataset) the generated pairs against ``data.max_generated``."""
    target = ctx.cfg.data.max_generated
    if ctx.target is not None or target is None or n_generated is None:
        return ctx.target
    short = max(0, target - n_generated)
    source = ctx.cfg.data.baseline_file or "the generated data"
    reason = f"{source} holds {n_generated:,} pairs after decontamination" if short else None
    return {"target_generated": target, "reached": min(n_generated, target), "documents_read": None, "rounds": [],
            "shortfall": short, "reason": reason}  # fmt: skip


def summarize(ctx: RunContext) -> dict[str, Any]:
    evaluate = ctx.artifacts["evaluate"].manifest["metrics"]
    cfg = ctx.cfg
    summary: dict[str, Any] = {
        "run": {
            "name": cfg.run.name,
            "method": cfg.method,
            "model": cfg.model.name,
            "models": roles(cfg),
            "seed_source": cfg.seed.source,
            "seed_size": cfg.seed.size,
            "corpus": cfg.corpus.source,
            "rewriter": cfg.rewriter.name,
            "rewriter_mode": cfg.rewriter.mode,
            "curation_enabled": cfg.curation.enabled,
            "curation_iterations": cfg.curation.iterations,
            "curation_scoring": cfg.curation.scoring,
            "curation_threshold": cfg.curation.threshold,
            "max_generated": cfg.data.max_generated,
            "baseline_file": cfg.data.baseline_file,
            "eval_set": cfg.eval.set,
            # what bft-report matches paper rows on besides the above (bft.eval.paper_rows.RowSettings)
            "corpus_bucket": OmegaConf.select(cfg, "corpus.perplexity_bucket"),
            "seed_tag": cfg.sft.seed_tag,
            "web_tag": cfg.sft.web_tag,
            "inference_tag": resolve(cfg).eval.inference_tag,
            "final_steps": cfg.sft.final.max_steps,
            "final_lr": cfg.sft.final.lr,
            "tags": list(cfg.tags),
            "group": cfg.logger.group,
            "run_dir": str(ctx.run_dir),
            "seed": cfg.run.seed,
        },
        "win_rate": evaluate.get("win_rate"),
        "standard_error": evaluate.get("standard_error"),
        "length_controlled_winrate": evaluate.get("length_controlled_winrate"),
        "discrete_win_rate": evaluate.get("discrete_win_rate"),
        "n": evaluate.get("n_total"),
        "n_generated": ctx.artifacts["train_data"].manifest["counts"].get("generated"),
        "n_seed": ctx.artifacts["train_data"].manifest["counts"].get("seed"),
        # the pairs the final model trained on (seed + generated), and the data target: reached or short, and why
        "n_train_pairs": ctx.artifacts["train_data"].manifest["counts"].get("out"),
        "target_generated": cfg.data.max_generated,
        "shortfall": None,
        "documents_read": None,
        "target": None,
        "decontaminated": _decontaminated(ctx.artifacts["train_data"].manifest["counts"]),
        "corpus_filters": _corpus_filters(ctx),
        "annotator": ctx.cfg.eval.annotator,
        "reference": ctx.cfg.eval.reference,
        "judge_calibration": _calibration(cfg),
        "curated_dataset": str((ctx.artifacts.get("rewrite") or ctx.artifacts["baseline_data"]).file("generated.jsonl")),
        "train_dataset": str(ctx.artifacts["train_data"].file("train.jsonl")),
        "final_model": str(ctx.artifacts["final_model"].file("model")),
        "leaderboard": str(ctx.artifacts["evaluate"].file("leaderboard.json")),
        # alpaca_eval's own CLI on the judged outputs and the run's cached judgements: the same win rate
        "reproduce": _reproduce(ctx.artifacts["evaluate"].path, evaluate.get("reproduce_script")),
        "wandb_dir": str(ctx.logger.dir) if ctx.logger.dir else None,
        "wandb": ctx.logger.describe(),  # group, job name, runs this pipeline made, their folder
        "stages": {
            r.stage: {"reused": r.reused, "in": r.records_in, "out": r.records_out, "seconds": round(r.seconds, 1), "key": r.key}
            for r in ctx.reports
        },
    }
    target = _target(ctx, summary["n_generated"])
    if target is not None:
        summary.update(shortfall=target["shortfall"], documents_read=target["documents_read"], target=target)
    curations = {n: a.manifest["metrics"] for n, a in ctx.artifacts.items() if n.startswith("curate_")}
    summary["curation"] = {
        name: {
            k: m.get(k)
            for k in (
                *("kept", "kept_fraction", "parse_failure_rate", "unfinished_ratings", "score_histogram"),
                *("kept_lengths", "dropped_lengths", "labels"),
            )
        }
        for name, m in curations.items()
    }
    summary["unfinished"] = _unfinished(ctx)
    return summary


def _reproduce(folder: Path, script: str | None) -> str | None:
    """``bash <evaluate artifact>/reproduce.sh``, or None for an evaluation made before bft wrote one."""
    return f"bash {folder / script}" if script and (folder / script).is_file() else None


def _unfinished(ctx: RunContext) -> dict[str, Any]:
    """Generations cut at ``max_new_tokens`` (no end-of-turn token), each dropped: instructions (augment),
    ratings (per curate step) and rewrites (``truncated``); None where the run has no such stage."""
    counts = {n: a.manifest.get("counts", {}) for n, a in ctx.artifacts.items()}
    return {
        "instructions": counts.get("augment", {}).get("unfinished_instructions"),
        "ratings": {n: a.manifest["metrics"].get("unfinished_ratings") for n, a in ctx.artifacts.items() if n.startswith("curate_")},
        "rewrites": counts.get("rewrite", {}).get("truncated"),
    }


def _unfinished_text(unfinished: dict[str, Any]) -> str:
    """ "cut at max_new_tokens and dropped: instructions 2, ratings curate_0 1, rewrites 0" (what the run has)."""
    parts = [f"instructions {unfinished['instructions']}"] if unfinished.get("instructions") is not None else []
    parts += [f"ratings {name} {n}" for name, n in (unfinished.get("ratings") or {}).items() if n is not None]
    parts += [f"rewrites {unfinished['rewrites']}"] if unfinished.get("rewrites") is not None else []
    return "cut at max_new_tokens and dropped: " + ", ".join(parts) if parts else ""


def _lengths_text(acc: dict[str, Any]) -> str:
    """ ", kept/dropped mean chars 1045/1096" when the accounting has length statistics of both sides."""
    kept, dropped = acc.get("kept_lengths") or {}, acc.get("dropped_lengths") or {}
    if kept.get("mean_chars") is None or dropped.get("mean_chars") is None:
        return ""
    return f", kept/dropped mean chars {kept['mean_chars']:.0f}/{dropped['mean_chars']:.0f}"


def print_summary(ctx: RunContext) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bft run '{ctx.cfg.run.name}'")
    for column in ("stage", "status", "in", "out", "seconds", "artifact"):
        table.add_column(column)
    for r in ctx.reports:
        table.add_row(
            r.stage,
            "reused" if r.reused else "computed",
            str(r.records_in if r.records_in is not None else "-"),
            str(r.records_out if r.records_out is not None else "-"),
            f"{r.seconds:.1f}",
            f"{r.key}",
        )
    console = Console(width=120)
    console.print(table)
    s = ctx.summary
    if shortfall_line(s.get("target")):
        console.print(shortfall_line(s["target"]), soft_wrap=True)  # one line, however long
    if s.get("corpus_filters"):
        console.print(removals_text(s["corpus_filters"]))
    if _decontaminated_text(s.get("decontaminated") or {}):
        console.print(_decontaminated_text(s["decontaminated"]))
    if _unfinished_text(s.get("unfinished") or {}):
        console.print(_unfinished_text(s["unfinished"]))
    for name, acc in s.get("curation", {}).items():
        console.print(
            f"{name}: kept {acc['kept']} ({acc['kept_fraction']:.1%}), parse failures "
            f"{acc['parse_failure_rate']:.1%}, histogram {acc['score_histogram']}"
            + _lengths_text(acc)
            + (f", labels {acc['labels']}" if acc.get("labels") else "")
        )
    se = s.get("standard_error")
    win = s.get("win_rate")
    console.print(
        f"AlpacaEval win rate vs {s['reference']} ({s['annotator']} judge, n={s['n']}): "
        + (f"{win:.2f}" if win is not None else "n/a")
        + (f" ± {se:.2f}" if se is not None else "")
        + "; "
        + calibration_note(s.get("judge_calibration"), s["annotator"], resolve(ctx.cfg).eval.judge_model)
    )
    if s.get("reproduce"):
        console.print(f"reproduce the win rate with alpaca_eval's CLI: {s['reproduce']}")
    console.print(f"curated dataset: {s['curated_dataset']}")
    console.print(f"final model/adapter: {s['final_model']}")
    console.print(f"W&B: {_wandb_line(s.get('wandb'))}")
    console.print(f"summary: {ctx.run_dir / 'summary.json'}")


def _wandb_line(wandb: dict | None) -> str:
    if not wandb:
        return "disabled"
    runs = wandb["runs"]
    return (
        f"{runs} {wandb['mode']} run{'s' * (runs != 1)} ({wandb['name']}: the pipeline job and {runs - 1} stage "
        f"job{'s' * (runs != 2)}) in group {wandb['group']}, under {wandb['dir']}"
    )
