"""The served judge (``annotator=openai_compatible``) against a scripted OpenAI-compatible server on 127.0.0.1.

The stub (tests/helpers/openai_stub.py) prefers the longer output (or, ``prefer="first"``, the first one shown), so
where each preference must land is known; the judging runs through alpaca_eval's own OpenAI decoder and parser.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from helpers.openai_stub import StubJudge

from bft.eval import annotators
from bft.eval import calibrate as cal
from bft.eval.annotators import AnnotatorError, AnnotatorNotReadyError, check_annotator_ready
from bft.eval.cli import main
from bft.eval.endpoint import EndpointError, endpoint_for, endpoint_from
from bft.eval.score import score_outputs

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)

KEY_ENV = "BFT_TEST_JUDGE_KEY"
SECRET = "sk-stub-secret-123"


def _pairs(n: int = 6) -> tuple[list[dict], list[dict]]:
    """Model outputs longer than the reference on even instructions, shorter on odd ones."""
    model, reference = [], []
    for i in range(n):
        long, short = "a detailed answer " * (2 + i), "ok"
        model.append({"instruction": f"q{i}", "output": long if i % 2 == 0 else short, "generator": "m"})
        reference.append({"instruction": f"q{i}", "output": short if i % 2 == 0 else long, "generator": "ref"})
    return model, reference


def _preferences(out_dir: Path) -> dict[str, float]:
    annotations = json.loads((out_dir / "alpaca_eval" / "annotations.json").read_text())
    return {a["instruction"]: a["preference"] for a in annotations}


def judging_requests(stub) -> list[dict]:
    """The stub's chat requests that judge a pair (not the one-token logprob probe of the readiness check)."""
    chats = [r for r in stub.requests if r["path"].endswith("/chat/completions")]
    return [r for r in chats if "Answer m or M." not in r["body"]["messages"][-1]["content"]]


def _all_text(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("orders", [1, 2])
def test_served_judge_preferences_land_on_the_longer_output(tmp_path, monkeypatch, orders):
    monkeypatch.setenv(KEY_ENV, SECRET)
    model, reference = _pairs()
    with StubJudge(api_key=SECRET) as stub:
        ep = endpoint_from(stub.url, stub.model, KEY_ENV)
        result = score_outputs(model, reference, "openai_compatible", tmp_path / "eval", judge_orders=orders, endpoint=ep)
    prefs = _preferences(tmp_path / "eval")
    # preference 2 = the model's output (output_2) wins; the stub gives the longer output 90%
    expected = {f"q{i}": 1.9 if i % 2 == 0 else 1.1 for i in range(6)}
    assert prefs == pytest.approx(expected)
    assert result["win_rate"] == pytest.approx(50.0) and result["n_total"] == 6
    assert result["judge_model"] == "stub-judge" + (", both orders" if orders == 2 else "")
    chats = judging_requests(stub)
    assert len(chats) == 6 * orders  # both orders: every pair also shown swapped
    assert all(r["authorization"] == f"Bearer {SECRET}" for r in stub.requests)
    body = chats[0]["body"]
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["messages"][0]["role"] == "system"
    assert SECRET not in _all_text(tmp_path / "eval")  # the key is read from the environment, never written
    assert result["annotator_settings"]["judge_api_key_env"] == KEY_ENV


def test_both_orders_cancel_a_position_biased_server(tmp_path):
    model, reference = _pairs(4)
    with StubJudge(prefer="first") as stub:
        ep = endpoint_from(stub.url, stub.model)
        one = score_outputs(model, reference, "openai_compatible", tmp_path / "one", judge_orders=1, endpoint=ep)
        both = score_outputs(model, reference, "openai_compatible", tmp_path / "both", judge_orders=2, endpoint=ep)
    assert {round(p, 6) for p in _preferences(tmp_path / "one").values()} <= {1.1, 1.9}
    assert one["n_total"] == 4
    assert all(p == pytest.approx(1.5) for p in _preferences(tmp_path / "both").values())
    assert both["win_rate"] == pytest.approx(50.0)
    assert all(r["authorization"] == "Bearer EMPTY" for r in stub.requests)  # keyless server


def test_plain_ae2_scheme_binarises(tmp_path):
    model, reference = _pairs(4)
    with StubJudge() as stub:
        ep = endpoint_from(stub.url, stub.model, scheme="alpaca_eval_clf_gpt4_turbo")
        score_outputs(model, reference, "openai_compatible", tmp_path / "eval", judge_orders=1, endpoint=ep)
    assert _preferences(tmp_path / "eval") == {"q0": 2.0, "q1": 1.0, "q2": 2.0, "q3": 1.0}


def _gold(tmp_path: Path) -> Path:
    """12 gold pairs whose gold judge prefers the longer output on 8 and the shorter on 4."""
    rows = []
    for i in range(12):
        o1, o2 = "x" * (10 + 5 * i), "y" * (70 - 3 * i)
        longer = 1.0 if len(o1) > len(o2) else 2.0
        pref = longer if i % 3 else 3.0 - longer
        rows.append({"instruction": f"q{i}", "output_1": o1, "output_2": o2, "preference": pref, "annotator": "gpt4"})
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_calibrate_cli_with_a_served_judge(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    gold, cache = _gold(tmp_path), tmp_path / "cache"
    with StubJudge(api_key=SECRET) as stub:
        argv = [
            "calibrate",
            "annotator=openai_compatible",
            f"judge_url={stub.url}",
            f"judge_model={stub.model}",
            f"judge_api_key_env={KEY_ENV}",
            "judge_orders=2",
            f"gold={gold}",
            f"cache_dir={cache}",
        ]
        assert main(argv) == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    brief = cal.judge_calibration("openai_compatible", "stub-judge", 2, cache_dir=cache)
    assert brief["annotator_id"] == "openai_compatible:stub-judge, both orders"
    assert brief["agreement"] == pytest.approx(8 / 12) == pytest.approx(brief["longer_wins_agreement"])
    assert brief["position_bias"] == pytest.approx(0.5, abs=0.2)
    assert SECRET not in _all_text(cache)
    note = cal.calibration_note(None, "openai_compatible", "stub-judge")
    assert "bft-eval calibrate annotator=openai_compatible judge_model=stub-judge judge_url=" in note


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_fails_in_one_line_before_any_work(tmp_path, capsys):
    outputs = tmp_path / "o.jsonl"
    outputs.write_text("".join(json.dumps(r) + "\n" for r in _pairs()[0]))
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    start = time.perf_counter()
    code = main([f"outputs={outputs}", "annotator=openai_compatible", f"judge_url={url}", "judge_model=x"])
    assert time.perf_counter() - start < 10
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith(f"bft-eval: error: judge_url={url} is unreachable")
    assert not (tmp_path / "eval").exists()


def test_missing_key_env_and_wrong_model_fail_fast(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with StubJudge(api_key=SECRET) as stub:
        with pytest.raises(AnnotatorNotReadyError, match=f"judge_api_key_env={KEY_ENV} is not set"):
            check_annotator_ready("openai_compatible", endpoint_from(stub.url, stub.model, KEY_ENV))
        assert stub.requests == []  # nothing sent without a key
        monkeypatch.setenv(KEY_ENV, "wrong")
        with pytest.raises(AnnotatorNotReadyError, match="refused the key"):
            check_annotator_ready("openai_compatible", endpoint_from(stub.url, stub.model, KEY_ENV))
        monkeypatch.setenv(KEY_ENV, SECRET)
        with pytest.raises(AnnotatorNotReadyError, match="does not serve judge_model=other .it serves: stub-judge"):
            check_annotator_ready("openai_compatible", endpoint_from(stub.url, "other", KEY_ENV))
        check_annotator_ready("openai_compatible", endpoint_from(stub.url, stub.model, KEY_ENV))
        gold = _gold(tmp_path)
        argv = ["calibrate", "annotator=openai_compatible", f"judge_url={stub.url}", "judge_model=x", f"gold={gold}"]
        assert main(argv) == 2
        assert "refused the key (no judge_api_key_env set)" in capsys.readouterr().err
        argv.append(f"judge_api_key_env={KEY_ENV}")
        assert main(argv) == 2
        assert "does not serve judge_model=x" in capsys.readouterr().err


def test_endpoint_settings_are_checked(tmp_path):
    with pytest.raises(EndpointError, match="needs judge_url="):
        endpoint_from(None, "m")
    with pytest.raises(EndpointError, match="needs judge_model="):
        endpoint_from("http://127.0.0.1:1/v1", None)
    with pytest.raises(EndpointError, match="must start with http"):
        endpoint_from("127.0.0.1:8000", "m")
    with pytest.raises(EndpointError, match="eval.judge_url is set but eval.annotator=local"):
        endpoint_for("local", "http://127.0.0.1:1/v1", "m")
    assert endpoint_for("local", None, "smollm2_135m") is None
    with pytest.raises(AnnotatorError, match="needs judge_url and judge_model"):
        check_annotator_ready("openai_compatible")
    with pytest.raises(AnnotatorError, match="decoder is"):
        annotators.scheme_settings("bedrock_claude")
    assert main(["outputs=x.json", "annotator=local", "judge_url=http://127.0.0.1:1/v1"]) == 2
    ranking = endpoint_from("http://127.0.0.1:1/v1", "m", scheme="alpaca_eval_gpt4")
    with pytest.raises(AnnotatorError, match="judge_orders=2 needs the weighted AE2 scheme"):
        annotators.endpoint_annotator(ranking, tmp_path, 2)
    path, kwargs, _ = annotators.endpoint_annotator(ranking, tmp_path, 1)  # one order: any OpenAI-decoder scheme
    assert kwargs["completions_kwargs"]["model_name"] == "m" and Path(path).is_file()


# ---------------------------------------------------------------- the pipeline's evaluate stage and `bft`


class _Artifact:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def file(self, name: str) -> Path:
        return self.folder / name


def test_evaluate_stage_uses_the_served_judge(compose_cfg, tmp_path, monkeypatch):
    from bft.pipeline.roles import resolve
    from bft.pipeline.stages.evaluation import EVALUATE, compute_evaluate

    monkeypatch.setenv(KEY_ENV, SECRET)
    model, reference = _pairs()
    upstream = {}
    for name, rows in (("eval_outputs", model), ("base_outputs", reference)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_outputs.json").write_text(json.dumps(rows))
        upstream[name] = _Artifact(tmp_path / name)
    work = tmp_path / "work"
    work.mkdir()
    with StubJudge(api_key=SECRET) as stub:
        overrides = [f"eval.judge_url={stub.url}", f"eval.judge_model={stub.model}", f"eval.judge_api_key_env={KEY_ENV}"]
        cfg = compose_cfg("eval.annotator=openai_compatible", *overrides)
        out = compute_evaluate(EVALUATE.config_slice(resolve(cfg)), upstream, work)
    chats = judging_requests(stub)
    assert cfg.eval.judge_orders == 2 and len(chats) == 2 * 6  # both orders by default
    assert _preferences(work) == pytest.approx({f"q{i}": 1.9 if i % 2 == 0 else 1.1 for i in range(6)})
    assert out.metrics["win_rate"] == pytest.approx(50.0) and out.metrics["judge_model"] == "stub-judge, both orders"
    assert SECRET not in _all_text(work)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval.annotator=openai_compatible", "eval.judge_model=x", "eval.judge_url=URL"], "judge_url=URL is unreachable"),
        (["eval.judge_url=http://127.0.0.1:9/v1"], "eval.judge_url is set but eval.annotator=local"),
        (["eval.annotator=openai_compatible"], "needs judge_url="),
    ],
)
def test_bft_run_fails_fast_on_a_bad_served_judge(tmp_path, args, message):
    import os
    import subprocess
    import sys

    url = f"http://127.0.0.1:{_closed_port()}/v1"
    args = [a.replace("URL", url) for a in args]
    argv = [*args, "debug=smoke", f"run.artifacts_dir={tmp_path / 'a'}", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, "-m", "bft.cli", *argv], capture_output=True, text=True, env=env, cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("bft: error:")]
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-1500:]
    assert len(errors) == 1 and message.replace("URL", url) in errors[0], result.stderr[-1500:]
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())  # no stage ran


RACE = """
import sys, threading
from concurrent.futures import ThreadPoolExecutor
from openai._models import construct_type
from openai.types.chat import ChatCompletion
from openai.types.chat.chat_completion import ChoiceLogprobs
from bft.eval.endpoint import build_response_models

assert not ChoiceLogprobs.__pydantic_complete__  # openai defers building its response models
build_response_models()
assert ChoiceLogprobs.__pydantic_complete__
top = {"token": "m", "logprob": -0.1, "bytes": [109]}
sample = {"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [{"index": 0,
          "finish_reason": "stop", "message": {"role": "assistant", "content": "m"},
          "logprobs": {"content": [{**top, "top_logprobs": [top]}]}}]}
sys.setswitchinterval(1e-6)  # without the build above, 8 threads parsing at once fail nearly every time
barrier = threading.Barrier(8)

def parse(_):
    barrier.wait()
    return construct_type(value=sample, type_=ChatCompletion).choices[0].logprobs.content[0].top_logprobs[0].token

with ThreadPoolExecutor(8) as pool:
    assert list(pool.map(parse, range(8))) == ["m"] * 8
"""


def test_response_models_are_built_before_alpaca_evals_threads_parse():
    """CI once failed with PydanticUserError: alpaca_eval's threads built openai's deferred models concurrently."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
