"""``bft export run=<run folder | artifact folder | key>`` (or ``bft-export``): Hugging Face formats of a run.

Writes ``<out>/dataset/`` (one Parquet file per set - curated, generated, train - and a README.md dataset card whose
configs ``datasets.load_dataset(<out>/dataset, "<set>")`` reads) and ``<out>/model/`` (the final model merged into
the base model as a ``save_pretrained`` folder, or with ``--adapter`` the PEFT adapter, and a README.md model card).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from bft.config.validate import ConfigError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bft export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", help="run=<run folder with summary.json | artifact folder | artifact key>")
    parser.add_argument("--run", dest="run_opt", help="the same as the positional run=...")
    parser.add_argument("--artifacts-dir", default="artifacts", help="the store, where run= is a key (default: artifacts)")
    parser.add_argument("--out", help="output folder (default: <run folder>/export, or export/<key>)")
    parser.add_argument("--adapter", action="store_true", help="export the adapter instead of merged weights")
    parser.add_argument("--no-model", action="store_true", help="export the datasets only")
    parser.add_argument("--push-to-hub", metavar="USER/NAME", help="upload to USER/NAME-data (dataset) and USER/NAME (model)")
    parser.add_argument("--public", action="store_true", help="create public hub repositories (default: private)")
    args = parser.parse_args(argv)
    run = args.run_opt or args.run
    if not run:
        parser.error("give the run: bft export run=<run folder or key>")
    args.run = run.removeprefix("run=")
    return args


def export(args: argparse.Namespace, api: Any = None) -> dict[str, Any]:
    from bft.export.cards import DATASET_LICENCE_FILE, dataset_card, licence_file, model_card
    from bft.export.datasets_out import write_sets
    from bft.export.hub import push
    from bft.export.model_out import write_model
    from bft.export.resolve import resolve_run

    artifacts, summary = resolve_run(args.run, args.artifacts_dir)
    run_path = Path(args.run)
    default_out = run_path / "export" if (run_path / "summary.json").is_file() else Path("export") / run_path.name
    final_out = Path(args.out) if args.out else default_out
    out = final_out.with_name(final_out.name + ".partial")  # renamed into place once complete
    if out.exists():
        shutil.rmtree(out)
    dataset_dir = out / "dataset"
    written = write_sets(artifacts, dataset_dir)
    if not written:
        raise ConfigError(f"run={args.run}: no curated, generated or training set found to export")
    card = dataset_card(artifacts, written, summary)
    card.save(dataset_dir / "README.md")
    if card.data.get("license_link") == DATASET_LICENCE_FILE:
        (dataset_dir / DATASET_LICENCE_FILE).write_text(licence_file(artifacts))
    result: dict[str, Any] = {"dataset": str(dataset_dir), "sets": written}
    dataset_repo = f"{args.push_to_hub}-data" if args.push_to_hub else None
    if not args.no_model and "final_model" in artifacts:
        model_dir = out / "model"
        base, merged = write_model(artifacts["final_model"], model_dir, merge=not args.adapter)
        model_card(artifacts, base, merged, dataset_repo).save(model_dir / "README.md")
        result |= {"model": str(model_dir), "merged": merged}
    if final_out.exists():
        shutil.rmtree(final_out)
    out.rename(final_out)
    result = {k: v.replace(str(out), str(final_out), 1) if isinstance(v, str) else v for k, v in result.items()}
    dataset_dir = final_out / "dataset"
    if args.push_to_hub:
        private = not args.public
        result["pushed"] = [push(dataset_dir, dataset_repo, "dataset", api, private)]
        if "model" in result:
            result["pushed"].append(push(Path(result["model"]), args.push_to_hub, "model", api, private))
    return result


def main(argv: list[str] | None = None) -> None:
    from bft.errors import one_line_errors
    from bft.logger.console import is_verbose, setup_console

    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_console(is_verbose())
    with one_line_errors():
        result = export(args)
    for name, info in result["sets"].items():
        print(f"{name}: {info['rows']} rows -> {result['dataset']}/{name}.parquet")
    print(f"dataset card: {result['dataset']}/README.md")
    if "model" in result:
        print(f"model ({'merged weights' if result['merged'] else 'adapter'}) and card: {result['model']}")
    for pushed in result.get("pushed", []):
        print(f"pushed: {pushed}")
