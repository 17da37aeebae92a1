"""Shared test set-up: offline, W&B off, artifacts and model cache in temporary folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"


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
