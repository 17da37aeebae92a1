"""What a stage is: the one declaration that holds what it reads, what it writes, the config it reads, and its
compute function.

``settings`` are dotted config paths (of the config after ``bft.pipeline.roles.resolve``); the stage's slice is
exactly those paths, typed as in ``bft.config.schema``, and its artifact key hashes that slice except the
``unkeyed`` paths: settings that are read but proven not to change the result (progress bars, log and checkpoint
frequency). ``compute(slice, upstream, work)`` gets nothing else: reading a setting that is not declared raises.
``exports`` names the file a downstream stage consumes under a logical name (``pairs``: what rewrite reads), so no
stage tests its upstream's name.

``version`` is the stage's code version, hashed into its key: bump it when a change to the code its compute reaches
changes its results (a parser fix, a new filter), so its artifacts and those downstream are recomputed while the
other stages' are reused. tests/test_stage_code.py records a digest of that code per stage and fails when it
changes until the version is bumped or the change is recorded as result-neutral (``python -m
tests.record_stage_digests``).
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from bft.artifacts.shards import shard_seed  # noqa: F401  (re-exported: stages seed their own extra passes)
from bft.artifacts.store import Artifact, StageOutput
from bft.config.schema import GenerationConfig

Compute = Callable[[DictConfig, dict[str, Artifact], Path], StageOutput]

# Recently built slices by (stage, settings' values): see Stage.config_slice. The stage is kept beside its slice
# so that an id reused after a stage object is freed never returns another stage's slice.
_SLICES: OrderedDict[tuple[int, str], tuple[Stage, DictConfig]] = OrderedDict()
_SLICES_KEPT = 512
# id(slice) -> (slice, stage, its key config): see Stage.key_config (the slice is kept, so its id is not reused)
_KEY_CONFIGS: dict[int, tuple[DictConfig, Stage, dict[str, Any]]] = {}


def _plain_values(plain_cfg: dict[str, Any], paths: tuple[str, ...]) -> list[Any] | None:
    """The value of each path in a plain config, or None where one is absent (the caller then selects from the
    DictConfig)."""
    values = []
    for path in paths:
        node: Any = plain_cfg
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        values.append(node)
    return values


@dataclass(frozen=True, eq=False)  # identity: two declarations with equal fields are still two stages
class Stage:
    name: str  # the artifact folder: <artifacts_dir>/<name>/<key>
    reads: tuple[str, ...]  # logical upstream names; "name?" = optional
    writes: tuple[str, ...]  # files (or folders, "model/") the store checks before publishing
    settings: tuple[str, ...]  # config paths forming the slice (and key)
    compute: Compute
    unkeyed: tuple[str, ...] = ()  # sub-paths of settings read but not hashed (no effect on results)
    exports: Mapping[str, str] = field(default_factory=dict)  # logical output name -> file
    version: int = 1  # the code version, in the key: bump when a code change changes results (module doc)

    def config_slice(self, cfg: DictConfig, plain_cfg: dict[str, Any] | None = None) -> DictConfig:
        """The stage's typed slice of ``cfg``: only its settings, read-only, unknown keys raise.

        Slices are read-only, so equal settings share one (:data:`_SLICES`): building a typed slice deep-copies
        its nodes, which made planning a sweep (and the key property test) spend most of its time here.
        ``plain_cfg``, ``cfg`` as resolved plain containers (one conversion for a whole plan), finds a cached
        slice without selecting each setting from ``cfg``."""
        plain = _plain_values(plain_cfg, self.settings) if plain_cfg is not None else None
        text = None if plain is None else json.dumps(plain, sort_keys=True, default=repr)
        values = None
        if text is None or "???" in text:  # no plain copy, or a missing value: select, which raises for it
            values = self._selected(cfg)
            plain = [OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v for v in values]
            text = json.dumps(plain, sort_keys=True, default=repr)
        cache_key = (id(self), text)
        cached = _SLICES.get(cache_key)
        if cached is not None and cached[0] is self:
            _SLICES.move_to_end(cache_key)
            return cached[1]
        if values is None:
            values = self._selected(cfg)
        nested: dict[str, Any] = {}
        for path, value in zip(self.settings, values, strict=True):
            *parents, leaf = path.split(".")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        out = OmegaConf.create(nested, flags={"readonly": True})
        OmegaConf.set_struct(out, True)
        _SLICES[cache_key] = (self, out)
        if len(_SLICES) > _SLICES_KEPT:
            _SLICES.popitem(last=False)
        return out

    def _selected(self, cfg: DictConfig) -> list[Any]:
        """Each setting's node or value in ``cfg`` (a missing value raises)."""
        return [OmegaConf.select(cfg, path, throw_on_missing=True) for path in self.settings]

    def key_config(self, config_slice: DictConfig) -> dict[str, Any]:
        """The part of the slice hashed into the artifact key: the slice minus ``unkeyed`` paths (a fresh copy;
        converted once per cached slice: a sweep's plans share their slices)."""
        if not OmegaConf.is_readonly(config_slice):  # a slice that may still change is converted every time
            return self._key_config(config_slice)
        kept = _KEY_CONFIGS.get(id(config_slice))
        if kept is None or kept[1] is not self:  # the entry holds the slice: its id is not reused while kept
            kept = (config_slice, self, self._key_config(config_slice))
            _KEY_CONFIGS[id(config_slice)] = kept
            if len(_KEY_CONFIGS) > _SLICES_KEPT:
                _KEY_CONFIGS.pop(next(iter(_KEY_CONFIGS)))
        return copy.deepcopy(kept[2])

    def _key_config(self, config_slice: DictConfig) -> dict[str, Any]:
        plain = OmegaConf.to_container(config_slice, resolve=True)
        for path in self.unkeyed:
            *parents, leaf = path.split(".")
            node = plain
            for part in parents:
                node = node[part]
            node.pop(leaf)
        return plain


# Trainer settings that do not change a trained model: display, logging frequency, resume points, which launcher
# starts the training processes (bft.sft.launch).
TRAINER_UNKEYED = (
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps",
    "trainer.launcher",
    "trainer.slurm",
)
# Generation-engine settings every generating stage reads (sampling is per stage: generation.augment, curation.*).
ENGINE = tuple(f"generation.{f.name}" for f in fields(GenerationConfig) if f.name != "augment")
# Who runs a generation stage's shards (bft.workers): N workers give what one gives, so never hashed.
WORKERS = ("workers",)
# Where the hf backend (and the local judge) runs: not hashed either. ``auto`` resolves per machine, so a hashed
# setting would not name the device anyway, and hashing the resolved device would make keys (and a dry run's
# plan) depend on the machine and keep a GPU machine from reusing a CPU machine's artifacts. A device changes
# floating-point rounding only, as dtype=auto (bf16 or float32 by CPU) and batch shapes already do; the device
# used is recorded in the stage's metrics (``device``). The server a stage generates through
# (``generation.server``: URL, key, concurrency; bft.generation.served) is placement in the same way; choosing it
# for every stage (``generation.backend=served``) changes the keys, as any backend does.
DEVICE = ("generation.device",)
SERVER = ("generation.server",)
PLACEMENT = (*WORKERS, *DEVICE, *SERVER)
