"""Every stage's artifact key covers exactly the settings it reads (property test over the real config schema).

For each setting (every leaf of the composed config) the test perturbs it and rebuilds the plan: a step's key must
change if and only if the stage declares the setting (directly, under a declared node, or through a role fallback
of ``bft.pipeline.roles``) or one of its upstream keys changed. Stage compute functions get only their slice, so a
stage that starts reading an undeclared setting fails (see ``test_a_slice_refuses_undeclared_settings``).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from bft.artifacts.store import ArtifactStore
from bft.errors import BftError
from bft.pipeline.plan import Step, build_plan
from bft.pipeline.roles import FALLBACKS, backward_seed_overrides
from bft.pipeline.stage import TRAINER_UNKEYED, Stage
from bft.pipeline.stages.data import SEED

BASES = {
    "default": (),
    "forward_seed_scope": ("seed.size=16", "seed.size_scope=forward"),
    "humpback_seed_model_rewriter": ("curation.iterations=2", "rewriter=seed_model"),
    "filter_only": ("method=filter_only",),
    "paper_roles": ("+experiment=backandforth_paper",),
    "baseline": ("data.baseline_file=alpaca.jsonl",),
}


def _leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        out = []
        for key, value in node.items():
            out += _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) and value else [f"{prefix}{key}"]
        return out
    return [prefix.rstrip(".")]


def _candidates(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1]
    if isinstance(value, float):
        return [value + 0.25]
    if isinstance(value, str):
        return [value + "_x"]
    if isinstance(value, list):
        return [[*value, "x"]]
    if isinstance(value, dict):
        return [{"x": 1}]
    return [7, "x", 0.5, {"name": "perturbed_model"}, ["x"]]  # None: the first value the schema accepts


@contextmanager
def _perturbed(cfg: DictConfig, path: str, raw: dict, resolved: dict) -> Iterator[bool]:
    """``cfg`` with ``path`` set to the first value the schema accepts (True), or unchanged (False); restored after.
    In place: a copy of the whole config per setting took a quarter of this test's time."""
    for candidate in _candidates(_raw(resolved, path)):
        try:
            OmegaConf.update(cfg, path, candidate, merge=False)
        except Exception:  # the schema refuses this type: try the next
            continue
        try:
            yield True
        finally:
            OmegaConf.update(cfg, path, _raw(raw, path), merge=False)  # the raw value: interpolations stay
        return
    yield False


def _keys(cfg: DictConfig) -> dict[str, tuple[Step, str]] | None:
    try:
        plan = build_plan(cfg)
    except BftError:  # a value the plan refuses (unknown rewriter.source, unread model.revision, ...)
        return None
    store, keys = ArtifactStore("/nonexistent"), {}
    out = {}
    for step in plan:
        key = store.key_for(step.stage.name, step.config, {k: keys[v] for k, v in step.upstream.items()}, step.stage.version)
        keys[step.name] = key
        out[step.name] = (step, key)
    return out


def _under(path: str, setting: str) -> bool:
    return path == setting or path.startswith(setting + ".")


def _interpolating(raw: dict, path: str) -> list[str]:
    """Settings whose value interpolates ``path`` (``run.name: ${method}``): changing ``path`` changes them too."""
    pattern = re.compile(r"\$\{" + re.escape(path) + r"[.}]")
    return [leaf for leaf in _leaves(raw) if pattern.search(str(_raw(raw, leaf)))]


def _raw(raw: dict, leaf: str) -> Any:
    for part in leaf.split("."):
        raw = raw[part]
    return raw


def _reads(step: Step, paths: list[str], cfg: DictConfig) -> bool:
    return any(_reads_one(step, p, cfg) for p in paths)


_NULL_FALLBACKS: dict[int, tuple[DictConfig, list[tuple[str, str]]]] = {}


def _null_fallbacks(cfg: DictConfig) -> list[tuple[str, str]]:
    """(role, source) of the FALLBACKS whose role is null in ``cfg`` (once per config: selecting is slow)."""
    cached = _NULL_FALLBACKS.get(id(cfg))
    if cached is None or cached[0] is not cfg:
        cached = (cfg, [(role, source) for role, source in FALLBACKS.items() if OmegaConf.select(cfg, role) is None])
        _NULL_FALLBACKS[id(cfg)] = cached
    return cached[1]


def _reads_one(step: Step, path: str, cfg: DictConfig) -> bool:
    """Whether ``step`` reads setting ``path`` of the unresolved ``cfg``: declared, or reached through a fallback."""
    if any(_under(path, u) for u in step.stage.unkeyed):
        return False
    overridden = backward_seed_overrides(cfg) or {} if step.name == "seed_full" else {}
    if path in overridden:
        return False
    fallbacks = _null_fallbacks(cfg)
    for setting in step.stage.settings:
        if _under(path, setting):
            return True
        for role, source in fallbacks:
            if _under(setting, role) and _under(path, source + setting[len(role) :]):  # final_model.name <- model.name
                return True
            if _under(role, setting) and _under(path, source):  # the rewriter node holds rewriter.name <- model.name
                return True
    return False


@pytest.mark.parametrize("base", [b if b == "default" else pytest.param(b, marks=pytest.mark.slow) for b in sorted(BASES)])
def test_a_key_changes_exactly_when_a_setting_its_stage_reads_changes(compose_cfg, base):
    cfg = compose_cfg(*BASES[base])
    before = _keys(cfg)
    assert before is not None
    checked = 0
    raw, resolved = OmegaConf.to_container(cfg, resolve=False), OmegaConf.to_container(cfg, resolve=True)
    for path in _leaves(resolved):
        paths = [path, *_interpolating(raw, path)]
        with _perturbed(cfg, path, raw, resolved) as changed_setting:
            after = _keys(cfg) if changed_setting else None
        if after is None:
            continue
        changed: set[str] = set()
        for name, (step, key) in before.items():
            if name not in after or after[name][0].stage is not step.stage or after[name][0].upstream != step.upstream:
                changed.add(name)  # the plan's shape changed here: nothing to compare
                continue
            expected = _reads(step, paths, cfg) or any(up in changed for up in step.upstream.values())
            assert (after[name][1] != key) == expected, f"{base}: {path} {'should' if expected else 'should not'} change {name}'s key"
            if after[name][1] != key:
                changed.add(name)
            checked += 1
    assert checked > 500
    assert OmegaConf.to_container(cfg, resolve=False) == raw  # every setting was restored


@pytest.mark.parametrize("setting", ["trainer.attention=eager", "trainer.compile=false", "trainer.precision=32"])
def test_training_settings_that_change_results_are_in_the_training_keys(compose_cfg, setting):
    a, b = _keys(compose_cfg()), _keys(compose_cfg(setting))
    for name in ("backward_model", "seed_model", "final_model"):
        assert a[name][1] != b[name][1]


def test_only_result_neutral_settings_are_left_out_of_keys():
    """Leaving a setting out of a key needs a reason: these only change display, logging and resume points, who
    runs a generation stage's shards (``workers``: 2 workers give byte-identical shards to 1, tests/test_workers.py)
    and who starts the training processes (``trainer.launcher``, ``trainer.slurm``: a launched job trains the same
    model as the pipeline process, tests/test_multidevice.py)
    and where (``generation.device``: placement, recorded in the stage's metrics; ``auto`` resolves per machine,
    and a device changes rounding only, as dtype=auto does across CPUs: see bft.pipeline.stage.DEVICE; and
    ``generation.server``, the server a listed stage generates through: URL, key, concurrency, tests/test_served.py
    shows its greedy tokens are the in-process engine's)."""
    from bft.pipeline import plan as plan_module

    neutral = {
        "trainer.enable_progress_bar",
        "trainer.log_every_n_steps",
        "trainer.checkpoint_every_n_steps",
        "trainer.launcher",
        "trainer.slurm",
    }
    assert set(TRAINER_UNKEYED) == neutral
    stages = [v for v in vars(plan_module).values() if isinstance(v, Stage)]
    assert stages and all(set(s.unkeyed) <= neutral | {"workers", "generation.device", "generation.server"} for s in stages)
    # the corpus stage reads generation.backend for the context budget's source (max_model_len), not to generate
    generating = [s for s in stages if "generation.backend" in s.settings and s.name != "corpus"]
    assert generating and all("generation.device" in s.unkeyed for s in generating)


def test_a_slice_refuses_undeclared_settings(compose_cfg):
    from omegaconf.errors import ConfigAttributeError, ReadonlyConfigError

    piece = SEED.config_slice(compose_cfg())
    assert piece.seed.source == "embedded" and piece.run.seed == 0
    with pytest.raises(ConfigAttributeError):
        _ = piece.model
    with pytest.raises(ConfigAttributeError):
        _ = piece.run.name
    with pytest.raises(ReadonlyConfigError):
        piece.run.seed = 1


def test_equal_role_settings_share_artifacts(compose_cfg):
    """An explicit role equal to the base model gives the same keys as leaving it null."""
    a = _keys(compose_cfg())
    b = _keys(compose_cfg("model@backward_model=smollm2_135m", "model@final_model=smollm2_135m"))
    assert {n: k for n, (_, k) in a.items()} == {n: k for n, (_, k) in b.items()}
    c = _keys(compose_cfg("model@backward_model=tiny"))
    assert c["backward_model"][1] != a["backward_model"][1] and c["seed_model"][1] == a["seed_model"][1]


# ------------------------------------------------------------------ what compute functions read, read from their code


def _chains(func: ast.FunctionDef, root: str) -> set[str]:
    """Longest attribute chains on the slice parameter ``root`` in ``func`` (``c.eval.set`` -> ``eval.set``)."""
    chains = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "_parent", None), ast.Attribute):
            parts, inner = [], node
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == root:
                chains.add(".".join(reversed(parts)))
    return chains


def _stage_module_reads(module) -> dict[Stage, set[str]]:
    """Per stage of ``module``: the settings its compute function, and the module's helpers it calls, read."""
    tree = ast.parse(inspect.getsource(module))
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            child._parent = parent  # type: ignore[attr-defined]
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    out = {}
    for stage in [v for v in vars(module).values() if isinstance(v, Stage)]:
        seen, todo, reads = set(), [stage.compute.__name__], set()
        while todo:
            name = todo.pop()
            if name in seen or name not in functions:
                continue
            seen.add(name)
            func = functions[name]
            reads |= _chains(func, "c")
            todo += [n.func.id for n in ast.walk(func) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
        out[stage] = reads
    return out


def _declared(chain: str, stage: Stage) -> bool:
    """A chain is declared when it is a declared setting, under one, or a node holding only declared ones."""
    return any(_under(chain, s) or _under(s, chain) for s in stage.settings)


@pytest.mark.parametrize("module_name", ["data", "training", "generation", "rewrite", "evaluation"])
def test_compute_functions_read_only_the_settings_their_stage_declares(module_name):
    module = importlib.import_module(f"bft.pipeline.stages.{module_name}")
    reads = _stage_module_reads(module)
    assert reads and all(reads.values()) or module_name == "rewrite"
    for stage, chains in reads.items():
        undeclared = sorted(c for c in chains if not _declared(c, stage))
        assert not undeclared, f"{stage.compute.__name__} reads {undeclared}, which stage {stage.name} does not declare"


@pytest.mark.parametrize("module_name", ["data", "training", "generation", "rewrite", "evaluation"])
def test_every_declared_setting_is_read(module_name):
    """No setting in a key that its compute function never reads (it would recompute for nothing)."""
    module = importlib.import_module(f"bft.pipeline.stages.{module_name}")
    for stage, chains in _stage_module_reads(module).items():
        unread = [s for s in stage.settings if not any(_under(s, c) or _under(c, s) for c in chains)]
        assert not unread, f"stage {stage.name} ({stage.compute.__name__}) declares {unread} but never reads them"


def test_the_code_scan_sees_an_undeclared_read():
    """The scan above is not vacuous: a compute function reading ``c.model.name`` is caught."""
    source = "def compute(c, upstream, work):\n    return c.model.name, c.run.seed\n"
    func = ast.parse(source).body[0]
    for parent in ast.walk(func):
        for child in ast.iter_child_nodes(parent):
            child._parent = parent  # type: ignore[attr-defined]
    chains = _chains(func, "c")
    assert chains == {"model.name", "run.seed"}
    assert [c for c in sorted(chains) if not _declared(c, SEED)] == ["model.name"]
