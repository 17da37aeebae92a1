"""Artifact keys know the code: each stage declares a ``version`` (in its key), and the code its compute function
reaches is recorded per stage (tests/stage_code_digests.json, tests/helpers/stage_code.py). Changing that code fails
here until the stage's version is bumped (its artifacts and those downstream are recomputed) or the change is recorded
as result-neutral (``python -m tests.record_stage_digests --same-results STAGE``)."""

from __future__ import annotations

import ast
import json
import logging
import shutil
from pathlib import Path

import pytest
from helpers.stage_code import BFT, SourceTree, _parsed, advice, all_stages, changes, load_recorded, record
from omegaconf import OmegaConf
from record_stage_digests import main as record_main

from bft.artifacts.provenance import code_provenance, origin_note
from bft.artifacts.store import ArtifactStore
from bft.config.schema import LoggerConfig
from bft.logger.run_logger import RunLogger
from bft.pipeline.context import RunContext
from bft.pipeline.dryrun import plan_table
from bft.pipeline.plan import build_plan
from bft.pipeline.runner import run_step
from bft.pipeline.stages.data import SEED


@pytest.fixture
def bump():
    """Raise a Stage declaration's version for the test (declarations are frozen: set past the guard, then restore)."""
    bumped = []

    def _bump(stage):
        bumped.append((stage, stage.version))
        object.__setattr__(stage, "version", stage.version + 1)

    yield _bump
    for stage, version in reversed(bumped):
        object.__setattr__(stage, "version", version)


def test_the_recorded_stage_digests_are_current():
    found = changes(load_recorded(), record())
    assert not found, "stage code changed since tests/stage_code_digests.json was recorded:\n" + advice(found)


@pytest.fixture
def source_copy(tmp_path) -> SourceTree:
    """A copy of bft's source to edit, and its digests file recorded as the code stands."""
    shutil.copytree(BFT, tmp_path / "bft", ignore=shutil.ignore_patterns("__pycache__"))
    tree = SourceTree(tmp_path / "bft")
    assert record_main([], tmp_path / "digests.json", tree) == 0
    return tree


def _flagged(tree: SourceTree, digests: Path) -> dict[str, str]:
    return {c.stage: c.kind for c in changes(load_recorded(digests), record(SourceTree(tree.root)))}


PARSER_USERS = {
    "augment:compute_augment",
    "curate:compute_curate",
    "rewrite:compute_rewrite_by_model",
    "eval_outputs:compute_eval_outputs",
}
NOT_PARSER_USERS = {
    "seed:compute_seed",
    "corpus:compute_corpus",
    "backward_model:compute_backward_model",
    "final_model:compute_final_model",
}


def test_a_parser_change_fails_until_a_version_is_bumped_or_recorded_as_result_neutral(source_copy, bump, capsys):
    digests = source_copy.root.parent / "digests.json"
    recorded = digests.read_text()
    with (source_copy.root / "parsers.py").open("a") as handle:
        handle.write("\nFIXED = True  # a parser fix\n")
    flagged = _flagged(source_copy, digests)
    assert set(flagged) >= PARSER_USERS and not NOT_PARSER_USERS & set(flagged)
    assert set(flagged.values()) == {"code"}
    assert "bft/parsers.py" in advice(changes(load_recorded(digests), record(SourceTree(source_copy.root))))

    assert record_main([], digests, SourceTree(source_copy.root)) == 1  # code changed, version kept: not without a word
    assert "bump version=" in capsys.readouterr().err and digests.read_text() == recorded
    assert record_main(["--same-results", "augment"], digests, SourceTree(source_copy.root)) == 1  # not for the others
    assert digests.read_text() == recorded

    stages = all_stages()
    for name in flagged:
        bump(stages[name])
    assert set(_flagged(source_copy, digests).values()) == {"bumped"}
    assert record_main([], digests, SourceTree(source_copy.root)) == 0  # bumped: recorded as is
    assert _flagged(source_copy, digests) == {}


def test_recording_a_change_as_result_neutral(source_copy):
    digests = source_copy.root.parent / "digests.json"
    with (source_copy.root / "parsers.py").open("a") as handle:
        handle.write("\n# a comment\n")
    assert _flagged(source_copy, digests)
    assert record_main(["--same-results"], digests, SourceTree(source_copy.root)) == 0
    assert _flagged(source_copy, digests) == {}


def test_only_the_edited_stage_is_flagged_and_a_version_edit_moves_no_digest(source_copy):
    """A stage module's digest covers the compute function and what it uses, not its neighbours or declarations."""
    digests = source_copy.root.parent / "digests.json"
    data = source_copy.root / "pipeline" / "stages" / "data.py"
    text = data.read_text()
    assert "compute_seed, version=1)" in text
    data.write_text(text.replace("compute_seed, version=1)", "compute_seed, version=2)"))
    assert _flagged(source_copy, digests) == {}  # the version is recorded on its own, from the imported stage
    data.write_text(text.replace("    records = load_seed(", "    records = load_seed(  # edited\n", 1))
    assert _flagged(source_copy, digests) == {"seed:compute_seed": "code"}


def _keys(cfg) -> dict[str, str]:
    return {row["step"]: row["key"] for row in plan_table(cfg)}


def test_a_version_bump_recomputes_the_stages_that_use_the_parser_and_reuses_the_others(compose_cfg, bump):
    cfg = compose_cfg()
    before = _keys(cfg)
    tree = SourceTree()
    users = {s for s in all_stages().values() if "bft/parsers.py" in tree.stage_code(s).files}
    for stage in users:
        bump(stage)
    after = _keys(cfg)
    changed = {name for name in before if before[name] != after[name]}
    expected: set[str] = set()
    for step in build_plan(cfg):  # the bumped stages, and everything downstream of them
        if step.stage in users or expected & set(step.upstream.values()):
            expected.add(step.name)
    assert changed == expected
    assert {"augment", "curate_0", "rewrite", "eval_outputs", "train_data", "final_model", "evaluate"} <= changed
    assert {"seed", "corpus", "backward_model", "seed_model"}.isdisjoint(changed)


def _context(tmp_path: Path, cfg) -> RunContext:
    logger = RunLogger(OmegaConf.structured(LoggerConfig(mode="disabled")), tmp_path / "run", {}, name="t")
    return RunContext(cfg=cfg, store=ArtifactStore(tmp_path / "store"), run_dir=tmp_path / "run", logger=logger)


def test_the_runner_keys_by_stage_version_and_says_when_it_reuses_other_code(tmp_path, compose_cfg, bump, caplog):
    cfg = compose_cfg()
    seed = build_plan(cfg)[0]
    ctx = _context(tmp_path, cfg)
    first = run_step(ctx, seed)
    assert not first.reused and first.manifest["code"] == code_provenance() and first.manifest["stage_version"] == 1
    manifest = json.loads((first.path / "manifest.json").read_text())
    manifest["code"] = {"bft": "0.0.1", "commit": "0123456789abcdef", "dirty": False}
    (first.path / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.INFO, logger="bft.pipeline.runner"):
        again = run_step(ctx, seed)
    assert again.reused and again.key == first.key
    assert "made by bft 0.0.1 at commit 0123456789ab; this run is bft" in caplog.text
    bump(SEED)
    bumped = run_step(ctx, seed)
    assert not bumped.reused and bumped.key != first.key and bumped.key == _keys(cfg)["seed"]


def test_origin_note():
    here = {"bft": "0.1.0", "commit": "a" * 40, "dirty": False}
    assert origin_note({"code": here}, here) is None
    assert "local changes" in origin_note({"code": here}, here | {"dirty": True})
    assert "commit bbbbbbbbbbbb" in origin_note({"code": here | {"commit": "b" * 40}, "stage_version": 3}, here)
    assert origin_note({}, here) == "made by a bft that did not record its version"
    installed = {"bft": "0.1.0", "commit": None, "dirty": None}
    assert origin_note({"code": installed}, installed) is None
    assert "bft 0.0.9" in origin_note({"code": installed | {"bft": "0.0.9"}}, installed)


def test_bft_reaches_none_of_its_modules_by_name():
    """The digests follow imports; a module imported by a name in a string would be missed."""
    loaders = ("import_module", "__import__", "run_module")
    found = []
    for path in BFT.rglob("*.py"):
        for node in ast.walk(_parsed(path.read_text())):
            if not (isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in loaders):
                continue
            if any(isinstance(a, ast.Constant | ast.JoinedStr) and "bft" in ast.unparse(a) for a in node.args):
                found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert not found
