"""alpaca_eval's own CLI with bft's judges registered: what a run's ``reproduce.sh`` calls.

``python -m bft.eval.alpaca_eval_cli evaluate --model_outputs ... --annotators_config <folder> ...`` is alpaca_eval
0.6.6's ``alpaca_eval`` command (its ``main()``: the same fire CLI, the same flags) after :func:`patch_alpaca_eval`,
which makes two minimal changes to the installed alpaca_eval, both applied at import by bft wherever it runs
alpaca_eval (:func:`bft.eval.score.score_outputs` and this CLI):

1. ``fn_completions`` names with a dot (``bft.eval.judges.hf_logprob_completions``) resolve by import. alpaca_eval
   resolves a decoder *name* only among its own decoders (``alpaca_eval.decoders.get_fn_completions``), so the
   ``configs.yaml`` a run saves under ``annotator_configs/<entry>/`` names its judge and the judge's arguments and is
   used as it is, both by bft's scoring and by this CLI (before, the judge was passed as keyword arguments and the
   saved config alone fell back to ``openai_completions`` without ``model_name``).
2. Cached preferences are read back as floats. With pandas >= 3, ``pd.read_json`` makes an all-integral
   ``preference`` column (discrete judges; weighted judges whose preferences round to 1.0 / 2.0 in the JSON) int64,
   and alpaca_eval then fails marking identical outputs as draws: ``Invalid value '1.5' for dtype 'int64'``.

3. Under bft's quiet console (not ``bft -v``), the annotators' "Annotation chunk" progress bar is not drawn: the
   judge's progress is bft's own stage line, and alpaca_eval's bar printed between bft's lines.

Not patched: alpaca_eval's ``huggingface_local_completions`` (it passes ``load_in_8bit`` to transformers 5's
``from_pretrained``); bft never uses it, its local judge is :func:`bft.eval.judges.hf_logprob_completions`.

:func:`write_reproduce_script` writes ``reproduce.sh`` next to a scoring's outputs: it runs this CLI on the saved
``model_outputs.json`` / ``reference_outputs.json`` and annotator config, reading the run's own judgements from a copy
of its ``annotations_cache.json`` (alpaca_eval's cache, keyed by instruction, the two outputs and the annotator), so
the judge does not run again and the win rate is the run's.
"""

from __future__ import annotations

import importlib
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from bft.errors import BftError

CONFIG_HEADER = (
    "# Written by bft.eval: alpaca_eval's AE2 weighted scheme judged by fn_completions (an importable bft function).\n"
    "# Use it with bft's registration of such names: python -m bft.eval.alpaca_eval_cli evaluate --annotators_config <this folder>\n"
)
REPRODUCE = "reproduce.sh"
_PATCHED = "_bft_patched"


class AlpacaEvalConfigError(BftError, ValueError):
    """A judge that cannot be written into an alpaca_eval annotator config."""


def import_name(fn: Callable[..., Any]) -> str:
    """``module.function`` that imports back to ``fn``."""
    name = f"{fn.__module__}.{getattr(fn, '__qualname__', '')}"
    if resolve_dotted(name) is not fn:
        raise AlpacaEvalConfigError(f"judge {fn!r} is not importable as {name}: it cannot be named in an annotator config")
    return name


def resolve_dotted(name: str) -> Callable[..., Any]:
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"Unknown decoder: {name} ({type(e).__name__}: {e})") from e


def patch_alpaca_eval() -> None:
    """Apply the patches of the module docstring to the imported alpaca_eval (idempotent)."""
    import pandas as pd
    from alpaca_eval import decoders, utils
    from alpaca_eval.annotators import base

    from bft.logger.console import is_verbose

    if getattr(decoders, _PATCHED, False):
        return
    original = decoders.get_fn_completions

    def get_fn_completions(name: Any) -> Callable[..., Any]:
        if isinstance(name, str) and "." in name:
            return resolve_dotted(name)
        return original(name)

    decoders.get_fn_completions = get_fn_completions
    base.get_fn_completions = get_fn_completions  # base.py imported the name itself

    original_load = base.BaseAnnotatorJSON.load_

    def load_(self: Any, path: Any = None) -> None:
        original_load(self, path)
        df = self.df_annotations
        if df is not None and self.annotation_key in df.columns:
            df[self.annotation_key] = pd.to_numeric(df[self.annotation_key], errors="coerce").astype(float)

    base.BaseAnnotatorJSON.load_ = load_

    chunks = utils.dataframe_chunk_generator

    def dataframe_chunk_generator(df: Any, chunksize: Any = None, tqdm_desc: Any = None) -> Any:
        return chunks(df, chunksize, tqdm_desc=tqdm_desc if is_verbose() else None)

    utils.dataframe_chunk_generator = dataframe_chunk_generator  # base.py calls it as utils.dataframe_chunk_generator
    setattr(decoders, _PATCHED, True)


def write_standalone_config(config_path: str | Path, annotator_kwargs: dict[str, Any]) -> Path:
    """Fold the judge passed as ``fn_completions`` / ``completions_kwargs`` keyword arguments into its ``configs.yaml``.

    Returns the config path; alpaca_eval configs with no such arguments (its own annotators) are left as they are.
    """
    path = Path(config_path)
    if not annotator_kwargs:
        return path
    unknown = set(annotator_kwargs) - {"fn_completions", "completions_kwargs"}
    if unknown:
        raise AlpacaEvalConfigError(f"{path}: cannot write {sorted(unknown)} into an annotator config")
    fn = import_name(annotator_kwargs["fn_completions"])
    configs = yaml.safe_load(path.read_text())
    for settings in configs.values():
        settings["fn_completions"] = fn
        settings["completions_kwargs"] = dict(annotator_kwargs.get("completions_kwargs") or {})
    path.write_text(CONFIG_HEADER + yaml.safe_dump(configs, sort_keys=False))
    return path


def cli_arguments(
    out_dir: Path, annotators_config: str | Path, name: str, seed: int, output_path: str, caching_path: str
) -> list[str]:
    """``alpaca_eval evaluate`` flags that reproduce a scoring in ``out_dir`` (paths as given, not quoted)."""
    config = Path(annotators_config)
    if config.name == "configs.yaml":
        config = config.parent  # alpaca_eval's documented form: a folder holding configs.yaml
    return [
        "evaluate",
        f"--model_outputs={out_dir}/model_outputs.json",
        f"--reference_outputs={out_dir}/reference_outputs.json",
        f"--annotators_config={config}",
        f"--name={name!r}",  # quoted: fire reads the value as a Python literal
        f"--seed={seed}",
        f"--caching_path={caching_path}",
        f"--output_path={output_path}",
        "--fn_metric=get_winrate",  # the win rate; LC needs all 805 instructions and df_gamed.csv (bft reports why not)
        "--sort_by=win_rate",
        "--precomputed_leaderboard=None",
        "--is_cache_leaderboard=False",
    ]


def write_reproduce_script(out_dir: Path, annotators_config: str | Path, name: str, seed: int, win_rate: float | None) -> Path:
    """``out_dir/reproduce.sh [OUT]``: alpaca_eval's CLI on this scoring's files, judgements read from its cache.

    Paths inside ``out_dir`` are found from the script's own (absolute) location, so the script stays right after the
    artifact store renames the folder; it copies ``annotations_cache.json`` to ``OUT`` (default: a new temporary
    folder), where alpaca_eval also writes its ``leaderboard.csv`` and ``annotations.json``: the run's files, whose
    checksums the artifact manifest holds, are only read.
    """
    out_dir = Path(out_dir).resolve()
    config = Path(annotators_config).resolve()
    config_arg = f"$HERE/{config.relative_to(out_dir)}" if config.is_relative_to(out_dir) else str(config)
    args = cli_arguments(Path("$HERE"), config_arg, name, seed, "$OUT", "$OUT/annotations_cache.json")
    quoted = [f'"{a}"' if "$" in a else shlex.quote(a) for a in args]  # $HERE / $OUT expand, nothing else does
    shown = f"{win_rate:.2f}" if win_rate is not None else "n/a"
    script = "\n".join(
        [
            "#!/usr/bin/env bash",
            f"# Reproduces this evaluation's win rate ({shown}) with alpaca_eval's own CLI (bft.eval.alpaca_eval_cli: its",
            "# main() with bft's judges registered). The run's judgements are read back from a copy of annotations_cache.json;",
            "# without it (OUT holding no cache) the judge named in the annotator config judges again.",
            "# Usage: bash reproduce.sh [OUT]   (OUT: where alpaca_eval writes leaderboard.csv; default a new temporary folder)",
            "set -euo pipefail",
            'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
            'OUT="${1:-$(mktemp -d)}"',
            'mkdir -p "$OUT"',
            'cp "$HERE/annotations_cache.json" "$OUT/annotations_cache.json"',
            "set -x",
            '"${PYTHON:-python}" -m bft.eval.alpaca_eval_cli ' + " ".join(quoted),
            'echo "alpaca_eval leaderboard: $OUT/leaderboard.csv"',
            "",
        ]
    )
    path = out_dir / REPRODUCE
    path.write_text(script)
    path.chmod(0o755)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """``alpaca_eval``'s command line (``alpaca_eval.main.main``) after :func:`patch_alpaca_eval`."""
    patch_alpaca_eval()
    from alpaca_eval.main import main as alpaca_eval_main

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    alpaca_eval_main()


if __name__ == "__main__":
    main()
