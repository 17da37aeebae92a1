"""Schema-derived strictness: unknown keys, mandatory group values and numeric ranges.

Everything here is read off the dataclasses in ``bft.config.schema`` (and the YAML files of the chosen group
options), so a key another module adds to the schema is checked without touching this file. Each failure is a
one-line ``ConfigError`` naming the key and what it accepts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterator, Mapping
from fnmatch import fnmatch
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bft.errors import ConfigError

# (pattern on the dotted key, low, low inclusive, high, high inclusive, what to tell the user). First match wins;
# patterns match the full dotted key, so "*.top_p" covers rewriter.top_p, eval.top_p, generation.augment.top_p...
Range = tuple[float, bool, float, bool, str]
_INF = math.inf
RANGES: list[tuple[str, Range]] = [
    ("curation.threshold", (1, True, 5, True, "a score on the 1-5 rating scale")),
    ("eval.judge_orders", (1, True, 2, True, "1 (one random order) or 2 (both orders, combined)")),
    ("data.max_generated", (0, True, _INF, False, "a count >= 0 or null")),
    ("workers.gpus_per_task", (0, True, _INF, False, "a GPU count >= 0 or null (what the stage needs)")),
    ("workers.pending_timeout_min", (0, False, _INF, False, "minutes > 0, or null to wait for ever")),
    ("workers.*_per_task", (1, True, _INF, False, "an integer >= 1 or null (what the stage needs)")),
    ("workers.mem_gb", (1, True, _INF, False, "GB >= 1 or null (what the stage needs)")),
    ("workers.timeout_min", (1, True, _INF, False, "minutes >= 1")),
    ("*top_p", (0, False, 1, True, "a fraction in (0, 1]")),
    ("*fraction", (0, False, 1, True, "a fraction in (0, 1]")),
    ("*minhash_threshold", (0, False, 1, True, "a similarity in (0, 1]")),
    ("*dropout", (0, True, 1, False, "a probability in [0, 1)")),
    ("*_ratio", (0, True, 1, True, "a ratio in [0, 1]")),
    ("*.lr", (0, False, _INF, False, "a learning rate > 0")),
    ("*.alpha", (0, False, _INF, False, "a number > 0")),
    ("*temperature", (0, True, _INF, False, "a temperature >= 0")),
    ("*.min_*", (0, True, _INF, False, "a number >= 0")),
    ("*.compile_min_tokens", (0, True, _INF, False, "a count >= 0")),
    ("*.checkpoint_every_n_steps", (0, True, _INF, False, "a step count >= 0 (0: no checkpoints)")),
    ("*.seed", (0, True, _INF, False, "an integer >= 0")),
    ("*timeout_s", (0, False, _INF, False, "seconds > 0")),
]
# integer settings that count things the run needs at least one of (a batch, a step, a shard, a rank...)
_POSITIVE_INT = ("*.max_*", "*size", "*_steps", "*.iterations", "*.n_samples", "*num_*", "*.top_k", "*.r", "*every_n*")
_COUNT: Range = (1, True, _INF, False, "an integer >= 1")
_NONNEG: Range = (0, True, _INF, False, "a number >= 0")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _numeric_kind(tp: Any) -> tuple[type | None, bool]:
    """(int or float or None, nullable) for an annotation such as ``int``, ``float | None``."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    nullable = type(None) in args
    kinds = [a for a in args if a is not type(None)]
    if len(kinds) == 1 and kinds[0] in (int, float):
        return kinds[0], nullable
    return None, nullable


def range_for(key: str, kind: type) -> Range:
    for pattern, rng in RANGES:
        if fnmatch(key, pattern):
            return rng
    if kind is int and any(fnmatch(key, p) for p in _POSITIVE_INT):
        return _COUNT
    return _NONNEG


def _schema_nodes(node: DictConfig, prefix: str = "") -> Iterator[tuple[str, DictConfig, type]]:
    """Every config node typed by a schema dataclass, with its dotted path."""
    cls = OmegaConf.get_type(node)
    if not _is_dataclass_type(cls):
        return
    yield prefix, node, cls
    for name in _hints(cls):
        if name in node and OmegaConf.is_dict(node._get_node(name)) and not OmegaConf.is_missing(node, name):
            yield from _schema_nodes(node[name], f"{prefix}{name}.")


def check_unknown_keys(cfg: DictConfig) -> None:
    """``+foo=1`` or ``+curation.treshold=3`` add keys Hydra accepts; the schema does not."""
    for prefix, node, cls in _schema_nodes(cfg):
        known = set(_hints(cls))
        for key in node:
            if prefix == "" and key == "hydra":
                continue
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                listed = ", ".join(sorted(known))
                hint = f"; did you mean {prefix}{close[0]}?" if close else f"; {prefix or 'top-level '}keys: {listed}"
                where = f"{cls.__name__} in bft/config/schema.py"
                raise ConfigError(f"unknown config key {prefix}{key} (not in the schema, {where}){hint}")


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def check_ranges(cfg: DictConfig) -> None:
    """Every int/float setting of the schema within its range (null allowed where the schema says so)."""
    for prefix, node, cls in _schema_nodes(cfg):
        for name, tp in _hints(cls).items():
            kind, nullable = _numeric_kind(tp)
            if kind is None or name not in node or OmegaConf.is_missing(node, name):
                continue
            key, value = f"{prefix}{name}", node[name]
            if value is None:
                if not nullable:
                    raise ConfigError(f"{key} must be set (null is not allowed)")
                continue
            low, low_in, high, high_in, what = range_for(key, kind)
            if isinstance(value, float) and math.isnan(value):
                raise ConfigError(f"{key}=nan: must be {what}")
            ok = (value >= low if low_in else value > low) and (value <= high if high_in else value < high)
            if not ok:
                null = " or null" if nullable and "null" not in what else ""
                raise ConfigError(f"{key}={_fmt(value)} is out of range: must be {what}{null}")


def _missing_leaves(tree: Any, prefix: str) -> Iterator[str]:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            if key == "defaults":
                continue
            yield from _missing_leaves(value, f"{prefix}{key}.")
    elif tree == "???":
        yield prefix.rstrip(".")


def _package(path: Path, group: str) -> str:
    for line in path.read_text().splitlines()[:5]:
        if line.startswith("# @package"):
            package = line.split()[-1]
            return "" if package == "_global_" else package.replace("_group_", group) + "."
    return group.replace("/", ".") + "."


def check_mandatory(cfg: DictConfig, choices: Mapping[str, Any], overrides: list[str], conf_dir: str | Path) -> None:
    """A group option's ``???`` stays mandatory even where the schema has a default for the key.

    Hydra merges the option's ``???`` onto the schema default and keeps the default, so ``bft corpus=file`` without
    ``corpus.source`` would silently read the embedded corpus. The key must be set by an override or by a later
    config (an experiment) to something other than the schema default.
    """
    import yaml

    set_keys = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    schema = OmegaConf.get_type(cfg)
    defaults = OmegaConf.structured(schema) if _is_dataclass_type(schema) else None
    for group, option in choices.items():
        if option is None or group.startswith("hydra"):
            continue
        path = Path(conf_dir) / group / f"{option}.yaml"
        if not path.is_file():
            continue
        tree = yaml.safe_load(path.read_text()) or {}
        for key in _missing_leaves(tree, _package(path, group)):
            if key in set_keys:
                continue
            value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
            default = OmegaConf.select(defaults, key, default=None, throw_on_missing=False) if defaults is not None else None
            if value is None or value == default or value == "???":
                raise ConfigError(f"{key} is mandatory with {group}={option} (conf/{group}/{option}.yaml): set {key}=...")
