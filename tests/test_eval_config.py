"""Every ``eval.*`` value is checked before any work: a bad one is one line naming the key and what it accepts.

Before these checks, ``bft eval.reference=nonsense`` trained every model and failed at the last stage. The
in-process cases compose the real config; the CLI cases run the real ``bft`` command, which must exit 2 in one
line within seconds, before a model loads or a run folder exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bft.config.validate import ConfigError, validate

REPO = Path(__file__).resolve().parents[1]

SERVED = ["eval.annotator=openai_compatible", "eval.judge_url=http://127.0.0.1:9/v1", "eval.judge_model=m"]
# (overrides, fragments the one-line error must contain: the key, and what it accepts)
BAD_EVAL = [
    (["eval.reference=nonsense"], ["eval.reference='nonsense'", "base, dataset or a run folder"]),
    (["eval.set=nope"], ["eval.set='nope'", "embedded, ae1, ae2 or an existing"]),
    (["eval.annotator=test_length_judge"], ["eval.annotator='test_length_judge'", "local, openai_compatible, an alpaca_eval"]),
    (["eval.annotator=alpaca_eval_gpt"], ["eval.annotator='alpaca_eval_gpt'", "did you mean alpaca_eval_gpt4?"]),
    (["eval.judge_model=/no/such/judge"], ["eval.judge_model='/no/such/judge'", "registered name"]),
    (["eval.judge_model=null", "model.name=/no/such/base"], ["eval.judge_model='/no/such/base'"]),
    (["eval.lc_weights_dir=/no/such/dir"], ["eval.lc_weights_dir='/no/such/dir' is not a folder"]),
    (["eval.judge_api_scheme=alpaca_eval_gpt4"], ["eval.judge_api_scheme is set but eval.annotator=local"]),
    (["eval.judge_url=http://127.0.0.1:9/v1"], ["eval.judge_url is set but eval.annotator=local"]),
    (["eval.annotator=openai_compatible"], ["needs judge_url="]),
    ([*SERVED, "eval.judge_api_scheme=nope"], ["eval.judge_api_scheme='nope'", "unknown annotator"]),
    (
        [*SERVED, "eval.judge_api_scheme=alpaca_eval_gpt4"],
        ["eval.judge_api_scheme='alpaca_eval_gpt4'", "judge_orders=2 needs the weighted AE2 scheme"],
    ),
]


@pytest.mark.parametrize(("overrides", "fragments"), BAD_EVAL, ids=[" ".join(o) for o, _ in BAD_EVAL])
def test_bad_eval_value_is_one_line_naming_the_key(compose_cfg, overrides, fragments):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*overrides, hydra_cfg=True))
    message = str(err.value)
    assert "\n" not in message and all(f in message for f in fragments), message


def test_good_eval_values_pass(compose_cfg, tmp_path):
    run = tmp_path / "earlier_run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "model_outputs.json").write_text(json.dumps([{"instruction": "q", "output": "a"}]))
    eval_set = tmp_path / "set.jsonl"
    eval_set.write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    annotator = tmp_path / "my_judge"
    annotator.mkdir()
    (annotator / "configs.yaml").write_text("my_judge:\n  fn_completions: openai_completions\n")
    for overrides in (
        [],
        ["eval=ae2"],
        [f"eval.reference={run}"],
        [f"eval.reference={run / 'eval' / 'model_outputs.json'}", f"eval.set={eval_set}"],
        [f"eval.annotator={annotator}", f"eval.lc_weights_dir={tmp_path}"],
        ["eval.annotator=weighted_alpaca_eval_gpt4_turbo"],
        ["eval.judge_model=HuggingFaceTB/SmolLM2-135M-Instruct"],
        [*SERVED, "eval.judge_orders=1", "eval.judge_api_scheme=alpaca_eval_gpt4"],
    ):
        validate(compose_cfg(*overrides, hydra_cfg=True))


CLI_CASES = [
    (["eval.reference=nonsense"], "eval.reference='nonsense'"),
    (["eval.annotator=test_length_judge"], "eval.annotator='test_length_judge' is not one of local, openai_compatible"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "fragment"), CLI_CASES, ids=[" ".join(o) for o, _ in CLI_CASES])
def test_real_cli_refuses_a_bad_eval_value_before_any_work(tmp_path, overrides, fragment):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    args = [*overrides, f"run.artifacts_dir={tmp_path / 'a'}", f"hydra.run.dir={tmp_path / 'run'}"]
    started = time.monotonic()
    command = [sys.executable, "-m", "bft.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    seconds = time.monotonic() - started
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("bft: error:"), lines
    assert fragment in lines[0]
    assert seconds < 45, f"took {seconds:.1f} s"  # no model loads: 3-5 s of CPU (20-28 s wall on a loaded 2-core machine)
    assert not (tmp_path / "a").exists() and not (tmp_path / "run").exists()  # no work, not even a run folder


def test_bft_eval_refuses_the_test_judge_and_its_help_does_not_offer_it(tmp_path, capsys):
    from bft.eval.cli import main

    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps([{"instruction": "q", "output": "a"}]))
    assert main([f"outputs={outputs}", "annotator=test_length_judge"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bft-eval: error: unknown annotator 'test_length_judge'") and "\n" not in err
    assert main(["--help"]) == 0
    assert "test_length_judge" not in capsys.readouterr().out
