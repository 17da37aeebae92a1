"""``bft``: the Hydra app that runs the whole pipeline for one composed config (or a sweep with ``-m``)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bft.config.schema import register_configs

CONF_DIR = str(Path(os.environ.get("BFT_CONF_DIR", Path(__file__).resolve().parents[2] / "conf")))
log = logging.getLogger("bft")

register_configs()


def run(cfg: DictConfig) -> float | None:
    from bft.config.validate import validate
    from bft.eval.annotators import check_annotator_ready
    from bft.models.registry import resolve_model_path
    from bft.pipeline.runner import print_summary, run_pipeline

    validate(cfg)
    check_annotator_ready(cfg.eval.annotator)
    resolve_model_path(cfg.model.name)  # a missing model folder fails here, before any work
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    ctx = run_pipeline(cfg, run_dir)
    print_summary(ctx)
    return ctx.summary.get("win_rate")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def app(cfg: DictConfig) -> float | None:
    from bft.errors import one_line_errors

    with one_line_errors():
        return run(cfg)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
