"""Fill the disk under the pipeline, then kill it (SIGKILL) in the middle of a generation stage and of training,
restart it with the same command each time, and check that the artifacts equal those of an uninterrupted run."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.in_process import run_in_process

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)

COMMON = ["debug=smoke", "trainer.checkpoint_every_n_steps=1", "sft.final.max_steps=4", "generation.shard_size=2"]
COMPARED = [
    "augment/*/candidates.jsonl",
    "curate/*/scored.jsonl",
    "rewrite/*/generated.jsonl",
    "train_data/*/train.jsonl",
    "final_model/*/model/adapter_model.safetensors",
    "eval_outputs/*/model_outputs.json",
]


def _cmd(artifacts: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "bft.cli", *COMMON, f"run.artifacts_dir={artifacts}", f"hydra.run.dir={run_dir}"]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outputs(artifacts: Path) -> dict[str, str]:
    found = {}
    for pattern in COMPARED:
        matches = [p for p in artifacts.glob(pattern) if ".partial" not in str(p)]
        assert len(matches) == 1, (pattern, matches)
        found[pattern] = _digest(matches[0])
    return found


def _run_and_kill_when(artifacts: Path, run_dir: Path, pattern: str, timeout: float = 400) -> None:
    proc = subprocess.Popen(_cmd(artifacts, run_dir), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if list(artifacts.glob(pattern)):
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc={proc.returncode}) before {pattern} appeared")
            time.sleep(0.2)
        pytest.fail(f"{pattern} did not appear within {timeout}s")
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, str]:
    """The same config run once without interruption, in this process (the interrupted runs are the CLI's)."""
    root = tmp_path_factory.mktemp("clean")
    run_in_process(root / "run", *COMMON, f"run.artifacts_dir={root / 'a'}")
    return _outputs(root / "a")


def _limit_file_size(max_bytes: int):
    """preexec_fn: any write past ``max_bytes`` fails with EFBIG, as a write to a full disk fails with ENOSPC."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get the OSError instead of being killed by the signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def test_disk_full_then_kills_in_generation_and_training_resume_to_identical_artifacts(uninterrupted, tmp_path):
    """One store through four starts of the same command: the disk fills at the first model save, then SIGKILL in
    the middle of a generation stage, then in the middle of training, then a run to the end, whose artifacts are
    those of the uninterrupted run."""
    artifacts = tmp_path / "a"
    # 1) 1 MB: the small JSONL stages fit, the first model save (tokenizer.json, ~2 MB) does not
    full = subprocess.run(
        _cmd(artifacts, tmp_path / "r1"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_limit_file_size(1_000_000),
    )
    assert full.returncode == 2, full.stderr[-2000:]
    assert "Traceback" not in full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("bft: error: disk full (File too large) while writing ") and str(artifacts) in last, last
    assert list(artifacts.glob("corpus/*/manifest.json")), "a stage finished before the disk filled was lost"
    assert not [p for p in artifacts.rglob("*") if ".tmp" in p.name], "temp files left behind"
    for manifest in artifacts.glob("*/*/manifest.json"):  # every published artifact is complete and verified
        assert ".partial" not in str(manifest)
    # 2) room again; SIGKILL once the augment stage has written its second shard (mid generation stage)
    _run_and_kill_when(artifacts, tmp_path / "r2", "augment/*.partial/shards/shard-00001.jsonl")
    assert not list(artifacts.glob("augment/*/manifest.json"))
    # 3) restart; SIGKILL once the final model has a checkpoint (mid training)
    _run_and_kill_when(artifacts, tmp_path / "r3", "final_model/*.partial/checkpoints/last.ckpt")
    assert list(artifacts.glob("augment/*/manifest.json")), "augment did not complete on the restart"
    assert not list(artifacts.glob("final_model/*/manifest.json"))
    # 4) restart again and let it finish, reusing what was done
    result = subprocess.run(_cmd(artifacts, tmp_path / "r4"), env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reused" in result.stdout + result.stderr
    assert _outputs(artifacts) == uninterrupted
