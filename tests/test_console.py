"""The console a person reads: one line per message, no ads or known warnings, a training bar in optimizer steps.

Training runs for real (the tiny model, 4 optimizer steps of 2 micro-batches each) in a fresh process whose root
logger is set up by Hydra's own job-logging config before Lightning is imported (Lightning then adds a handler of
its own, and every Lightning line printed twice before bft.logger.console), so what is asserted is what ``bft`` prints.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from bft.logger.console import BftOrImportant, DropAdvertisements, setup_console
from bft.logger.progress import format_loss, format_lr

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import logging, logging.config, sys
    from pathlib import Path
    import hydra, yaml
    # Hydra's own job logging (console + file handlers on the root), configured before lightning is imported, as in bft
    conf = yaml.safe_load((Path(hydra.__file__).parent / "conf/hydra/job_logging/default.yaml").read_text())
    conf["handlers"]["file"]["filename"] = str(Path(sys.argv[1]) / "job.log")
    logging.config.dictConfig(conf)
    from bft.logger.console import setup_console
    setup_console(verbose=sys.argv[2] == "1")
    from bft.config.schema import PeftConfig, SFTStageConfig, TrainerConfig
    from bft.sft import train_sft
    examples = [{"prompt": f"Question {i}: what is {i} plus {i}?", "completion": f"The answer is {2 * i}."} for i in range(8)]
    stage = SFTStageConfig(lr=2e-4, warmup_ratio=0.0, max_steps=4, batch_size=4, micro_batch_size=2, max_seq_len=128)
    trainer = TrainerConfig(accelerator="cpu", enable_progress_bar=True, checkpoint_every_n_steps=0)
    out = Path(sys.argv[1]) / "final_model" / "abc.partial"
    train_sft(examples, "tiny", out, stage, PeftConfig(r=8), trainer, seed=0)
    logging.getLogger("bft.pipeline.runner").info("final_model: done")
    """
)


def _train(tmp_path: Path, verbose: bool) -> str:
    """The training in a fresh process, with an ``srun`` on the PATH as on a Slurm login node (Lightning warns then)."""
    script = tmp_path / "train_console.py"
    script.write_text(SCRIPT)
    login_node = tmp_path / "bin"
    login_node.mkdir()
    (login_node / "srun").write_text("#!/bin/sh\nexit 1\n")
    (login_node / "srun").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{login_node}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "PYTHONWARNINGS": "default",
    }
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "1" if verbose else "0"], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def quiet_output(tmp_path_factory) -> str:
    return _train(tmp_path_factory.mktemp("quiet"), verbose=False)


def test_training_bar_counts_optimizer_steps_with_readable_lr(quiet_output):
    bar = [line for line in quiet_output.splitlines() if "steps" in line and line.startswith("final_model")]
    assert bar, quiet_output
    assert "4/4 steps" in bar[-1]  # optimizer steps, not the 8 micro-batches
    assert re.search(r"loss \d+\.\d{3}", bar[-1]) and re.search(r"lr \d\.\d\de[-+]\d\d", bar[-1]), bar[-1]
    assert "Epoch" not in quiet_output and "0.000" not in bar[-1]


def test_default_console_has_no_duplicates_ads_or_known_warnings(quiet_output):
    lines = [line.strip() for line in quiet_output.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), quiet_output
    for noise in ("Tip:", "litlogger", "FutureWarning", "GPU available", "weights_only", "LeafSpec", "Loading weights", "srun"):
        assert noise not in quiet_output, (noise, quiet_output)
    assert "final_model: done" in quiet_output  # bft's own lines stay
    assert len(lines) <= 10, quiet_output


def test_verbose_brings_library_lines_back_once(tmp_path):
    output = _train(tmp_path, verbose=True)
    gpu = [line for line in output.splitlines() if "GPU available" in line]
    assert len(gpu) == 1, output  # Lightning's line, through the one root handler, not twice
    assert "Tip:" not in output  # advertisements stay out even then


def test_formatters():
    assert format_lr(2e-5) == "2.00e-05" and format_lr(None) == "-"
    assert format_loss(1.23456) == "1.235"


def test_advertisement_filter_and_warning_filters():
    record = logging.LogRecord("lightning.pytorch", logging.INFO, __file__, 1, "💡 Tip: try installing litlogger", None, None)
    assert not DropAdvertisements().filter(record)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        setup_console(verbose=False)
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed", FutureWarning, stacklevel=1)
        warnings.warn("something new", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something new"]
    for name, message in (("alpaca_eval", "Saving_path is given but not 'auto', make sure"), ("submitit", "Bypassing sacct error")):
        assert not BftOrImportant().filter(logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None))
    assert BftOrImportant().filter(logging.LogRecord("alpaca_eval", logging.WARNING, __file__, 1, "judge failed", None, None))


def test_datasets_bars_follow_the_console_without_importing_datasets(monkeypatch):
    import bft.logger.console as console

    variable = "HF_DATASETS_DISABLE_PROGRESS_BARS"  # read by datasets when something imports it later
    monkeypatch.delitem(sys.modules, "datasets", raising=False)
    monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(console, "_CONSOLE", {})
    setup_console(verbose=False)
    assert os.environ[variable] == "1" and "datasets" not in sys.modules
    setup_console(verbose=True)
    assert variable not in os.environ and "datasets" not in sys.modules
    monkeypatch.setenv(variable, "0")  # the user's own setting stays, either way
    setup_console(verbose=True)
    setup_console(verbose=False)  # and the console as the other tests of this process expect it
    assert os.environ[variable] == "0"
