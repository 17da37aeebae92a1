"""Shared test set-up: offline, W&B off, artifacts and model cache in temporary folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"


# The files that take 20 s or more of `make test`, heaviest first (CI durations). Under `-n 2 --dist loadfile`
# each worker takes the next whole file when it is free, so these go first (longest job first) and the short files
# fill in behind them; xdist's own order (most tests first) left a 6-minute one-test file to start last, alone.
HEAVY_FILES_FIRST = (
    "test_multidevice.py",
    "test_served.py",
    "test_slurm.py",
    "test_fault_injection.py",
    "test_paper_smoke.py",
    "test_stage_keys.py",
    "test_bad_input.py",
    "test_config.py",
    "test_pipeline_smoke.py",
    "test_workers.py",
    "test_bench.py",
    "test_sft_learning.py",
    "test_sft.py",
    "test_memcheck.py",
    "test_strict_config.py",
    "test_wandb_lineage.py",
    "test_console.py",
    "test_corpus_engine.py",
    "test_export.py",
    "test_paper_configs.py",
    "test_alpaca_eval_cli.py",
    "test_data_target.py",
    "test_distributed_sft.py",
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the file order set below
        config.option.loadscopereorder = False


def _file_rank(item) -> int:
    name = item.path.name
    return HEAVY_FILES_FIRST.index(name) if name in HEAVY_FILES_FIRST else len(HEAVY_FILES_FIRST)


def pytest_collection_modifyitems(config, items):
    """Heavy files first (see HEAVY_FILES_FIRST; a stable sort keeps each file's own order).

    ``@pytest.mark.gpu`` (``gpu(devices=N)``): skipped where this machine has fewer CUDA GPUs, as Lightning's
    ``RunIf(min_cuda_gpus=N)``; ``make test-gpu`` (``pytest -m gpu``) runs the lane, ``make test`` includes it."""
    items.sort(key=_file_rank)
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if not marked:
        return
    from bft.config.machine import cuda_device_count  # no torch import where no GPU driver is loaded

    count = cuda_device_count()
    for item in marked:
        need = item.get_closest_marker("gpu").kwargs.get("devices", 1)
        if count < need:
            item.add_marker(pytest.mark.skip(reason=f"needs {need} CUDA GPU(s), this machine has {count}"))


@pytest.fixture
def compose_cfg():
    """Compose the real project config with overrides, as the `bft` command does."""
    from hydra import compose, initialize_config_dir

    from bft.config.schema import register_configs

    register_configs()

    def _compose(*overrides: str, hydra_cfg: bool = False):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_cfg)

    return _compose


def save_model_without_chat_template(folder: Path) -> Path:
    """A base-model folder as Llama-2 ships it: the tiny random Llama (2 layers) whose tokenizer has no chat template."""
    from bft.models.registry import resolve_model_path

    src = Path(resolve_model_path("tiny"))
    folder.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and item.name not in ("chat_template.jinja", "chat_template.json", ".complete"):
            (folder / item.name).write_bytes(item.read_bytes())
    config = folder / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data.pop("chat_template", None)
    config.write_text(json.dumps(data, indent=2))
    return folder


@pytest.fixture(scope="session")
def no_template_model(tmp_path_factory) -> Path:
    """Folder of a tiny random Llama saved WITHOUT a chat template (see save_model_without_chat_template)."""
    return save_model_without_chat_template(tmp_path_factory.mktemp("base_llama") / "model")


@pytest.fixture
def length_judge(monkeypatch) -> str:
    """``annotator=local`` judged by tests/helpers/length_judge.py instead of a model; returns the judge_model to pass."""
    from helpers.length_judge import JUDGE_MODEL, length_judge_completions

    from bft.eval import judges

    monkeypatch.setattr(judges, "hf_logprob_completions", length_judge_completions)
    return JUDGE_MODEL
