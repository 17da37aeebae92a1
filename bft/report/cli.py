"""``bft-report``: the papers' tables side by side with this project's runs (console, Markdown, CSV).

bft-report                                  # runs under outputs/ and multirun/, tables into reports/
bft-report multirun/2025-01-01 --out reports/seed_sweep
bft-report --wandb my-team/bft              # also finished runs from the W&B API (needs network)
bft-report --notebook                       # also execute notebooks/results.ipynb into reports/
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console

from bft.report.load import DEFAULT_RUN_DIRS, load_runs
from bft.report.render import print_report, write_report
from bft.report.tables import all_tables
from bft.report.targets import data_target_table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bft-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "paths", nargs="*", default=list(DEFAULT_RUN_DIRS), help="folders searched for summary.json (default: outputs multirun)"
    )
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also load finished runs from this W&B project")
    parser.add_argument("--out", default="reports", help="folder for report.md, <table>.md and <table>.csv (default: reports)")
    parser.add_argument("--notebook", action="store_true", help="also execute notebooks/results.ipynb (figures into OUT/figures)")
    return parser.parse_args(argv)


def _with_wandb(runs: pd.DataFrame, project: str, console: Console) -> pd.DataFrame:
    from bft.report.wandb_runs import WandbUnavailable, load_wandb_runs

    try:
        remote = load_wandb_runs(project)
    except WandbUnavailable as err:
        console.print(f"[yellow]W&B runs not loaded: {err}. Reporting local runs only.[/yellow]")
        return runs
    console.print(f"W&B: {len(remote)} finished run(s) with a bft summary in {project}")
    return pd.concat([runs, remote], ignore_index=True) if len(remote) else runs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=200)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        console.print(f"[dim]not found, skipped: {', '.join(missing)}[/dim]")
    runs = load_runs(args.paths)
    for problem in runs.attrs.get("skipped", []):
        console.print(f"[yellow]unreadable summary skipped: {problem}[/yellow]")
    console.print(f"{len(runs)} run(s) found under {', '.join(args.paths)}")
    if args.wandb:
        runs = _with_wandb(runs, args.wandb, console)
    tables = [*all_tables(runs), data_target_table(runs)]
    print_report(tables, console)
    written = write_report(
        tables,
        args.out,
        preamble=f"{len(runs)} run(s) from {', '.join(args.paths)}" + (f" and W&B {args.wandb}" if args.wandb else "") + ".\n\n",
    )
    console.print(f"report: {written[0]} (+ {len(written) - 1} Markdown / CSV files in {args.out})")
    if args.notebook:
        from bft.report.notebooks import RESULTS_NOTEBOOK, run_notebook

        executed = Path(args.out) / "results.ipynb"
        run_notebook(
            RESULTS_NOTEBOOK,
            {"RUNS_DIR": [str(Path(p).resolve()) for p in args.paths], "REPORT_DIR": str(Path(args.out).resolve())},
            cwd=Path.cwd(),
            output=executed,
        )
        console.print(f"notebook: {executed} (figures in {Path(args.out) / 'figures'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
