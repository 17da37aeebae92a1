"""Strict configs: unknown keys, mandatory group values, numeric ranges and this machine's abilities fail in one line.

Most cases compose the real config in-process (fast); a handful go through the real ``bft`` command, which must
exit 2 with one line and no traceback within a few seconds, before any artifact is written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bft.config.machine import check_machine
from bft.config.strict import RANGES, range_for
from bft.config.validate import ConfigError, validate

REPO = Path(__file__).resolve().parents[1]

# (overrides, a fragment the one-line error must contain)
BAD_CONFIGS = [
    (["+foo=1"], "unknown config key foo"),
    (["+curation.treshold=3"], "did you mean curation.threshold"),
    (["+sft.final.learning_rate=1e-4"], "unknown config key sft.final.learning_rate"),
    (["+generation.augment.top_k=5"], "unknown config key generation.augment.top_k"),
    (["corpus=file"], "corpus.source is mandatory with corpus=file"),
    (["seed=file"], "seed.source is mandatory with seed=file"),
    (["eval.max_instances=-1"], "eval.max_instances=-1 is out of range"),
    (["curation.threshold=9"], "1-5 rating scale"),
    (["curation.threshold=0.5"], "curation.threshold=0.5"),
    (["curation.top_fraction=1.5"], "fraction in (0, 1]"),
    (["curation.top_fraction=0"], "curation.top_fraction=0"),
    (["curation.top_k=0"], "curation.top_k=0"),
    (["curation.n_samples=0"], "curation.n_samples=0"),
    (["seed.size=0"], "seed.size=0"),
    (["corpus.max_documents=-3"], "corpus.max_documents=-3"),
    (["corpus.minhash_threshold=1.2"], "corpus.minhash_threshold"),
    (["rewriter.top_p=0"], "rewriter.top_p=0"),
    (["rewriter.temperature=-1"], "rewriter.temperature=-1"),
    (["generation.augment.max_new_tokens=0"], "generation.augment.max_new_tokens=0"),
    (["generation.max_batch_tokens=0"], "generation.max_batch_tokens=0"),
    (["sft.final.lr=0"], "sft.final.lr=0"),
    (["sft.seed.warmup_ratio=2"], "sft.seed.warmup_ratio=2"),
    (["sft.backward.dropout=1"], "sft.backward.dropout=1"),
    (["peft.r=0"], "peft.r=0"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1"),
    (["logger.sample_rows=-1"], "logger.sample_rows=-1"),
    (["data.max_generated=-5"], "data.max_generated=-5"),
    (["run.seed=-1"], "run.seed=-1"),
]
GOOD_CONFIGS = [
    [],
    ["debug=smoke"],
    ["corpus=file", "corpus.source=/tmp/docs.jsonl"],
    ["seed=file", "seed.source=embedded"],  # set explicitly, even to the schema default
    ["curation.threshold=1"],
    ["curation=paper"],
    ["curation.top_fraction=1"],
    ["data.max_generated=0"],
    ["eval.max_instances=null"],
    ["trainer.devices=-1"],  # Lightning's "all devices"; devices is not a plain number in the schema
    ["+experiment=humpback_local"],
]


@pytest.mark.parametrize(("overrides", "fragment"), BAD_CONFIGS, ids=[" ".join(o) for o, _ in BAD_CONFIGS])
def test_bad_config_fails_with_one_line_naming_the_key(compose_cfg, overrides, fragment):
    cfg = compose_cfg(*overrides, hydra_cfg=True)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert fragment in message and "\n" not in message


@pytest.mark.parametrize("overrides", GOOD_CONFIGS, ids=[" ".join(o) or "default" for o in GOOD_CONFIGS])
def test_good_configs_pass(compose_cfg, overrides):
    validate(compose_cfg(*overrides, hydra_cfg=True))


def test_every_numeric_schema_field_gets_a_range():
    """Ranges come from the schema's types and key names: a new count or fraction key is checked without a table."""
    assert range_for("workers.num_workers", int)[0] == 1
    assert range_for("corpus.new_fraction", float)[:4] == (0, False, 1, True)
    assert range_for("whatever.new_float", float)[:2] == (0, True)
    assert all(isinstance(pattern, str) for pattern, _ in RANGES)


def test_a_key_added_to_the_schema_is_checked_without_a_table(compose_cfg, monkeypatch):
    """Simulate another module adding a dataclass field: strictness follows the schema, not a key list."""
    from omegaconf import OmegaConf, open_dict

    cfg = compose_cfg("+curation.treshold=3", hydra_cfg=True)
    with pytest.raises(ConfigError):
        validate(cfg)
    cfg = compose_cfg(hydra_cfg=True)
    with open_dict(cfg):
        cfg.generation.shard_size = -2
    with pytest.raises(ConfigError, match="generation.shard_size=-2"):
        validate(cfg)
    assert OmegaConf.get_type(cfg.generation).__name__ == "GenerationConfig"


def test_machine_without_the_accelerator_fails_in_one_line(compose_cfg, monkeypatch):
    import bft.config.machine as machine

    monkeypatch.setattr(machine, "cuda_device_count", lambda: 0)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        check_machine(compose_cfg("trainer=gpu", hydra_cfg=True))
    monkeypatch.setattr(machine, "_installed", lambda module: False)
    with pytest.raises(ConfigError, match="vllm is not installed"):
        check_machine(compose_cfg("generation=vllm", hydra_cfg=True))
    monkeypatch.setattr(machine, "cuda_device_count", lambda: 2)
    with pytest.raises(ConfigError, match="trainer.devices=4 but this machine has 2"):
        check_machine(compose_cfg("trainer=gpu", "trainer.devices=4", hydra_cfg=True))


CLI_CASES = [
    ["+foo=1"],
    ["corpus=file"],
    ["eval.max_instances=-1"],
    ["curation.threshold=9"],
    ["trainer=gpu"] if not __import__("torch").cuda.is_available() else ["+curation.treshold=3"],
]


@pytest.mark.parametrize("overrides", CLI_CASES, ids=[" ".join(o) for o in CLI_CASES])
def test_real_cli_exits_2_in_one_line_within_seconds(tmp_path, overrides):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    args = [*overrides, f"run.artifacts_dir={tmp_path / 'a'}", f"hydra.run.dir={tmp_path / 'run'}"]
    started = time.monotonic()
    command = [sys.executable, "-m", "bft.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-1500:]
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bft: error:"), lines
    assert "Traceback" not in result.stderr
    assert seconds < 20, f"took {seconds:.1f} s"  # about 2 s on an idle 2-core machine
    assert not (tmp_path / "a").exists() and not (tmp_path / "run").exists()  # no work, not even a run folder


@pytest.mark.parametrize(("environ", "raised"), [({}, SystemExit), ({"SUBMITIT_EXECUTOR": "slurm"}, "SweepJobError")])
def test_a_config_error_exits_2_or_reaches_the_sweep_that_submitted_the_job(monkeypatch, capsys, environ, raised):
    """Under submitit (a sweep job of hydra/launcher=submitit_slurm) an exit leaves the job without a result:
    the error is raised for submitit to record; tests/test_slurm.py runs it on the cluster."""
    from bft.errors import SweepJobError, one_line_errors

    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    expected = SweepJobError if raised == "SweepJobError" else raised
    with pytest.raises(expected) as caught, one_line_errors(raise_for_submitit=True):
        raise ConfigError("seed.size=-1: must be >= 1")
    assert capsys.readouterr().err == "bft: error: seed.size=-1: must be >= 1\n"
    assert caught.value.code == 2 if expected is SystemExit else str(caught.value).endswith("must be >= 1")
