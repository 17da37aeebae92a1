"""Served generation (``generation.backend=served``) against a real OpenAI-compatible server started here:
``transformers serve`` on the CPU (tests/helpers/transformers_server.py).

What a server that returns no logprobs cannot show (logprob curation, the AE2 weighted judge) is refused before any
work, in one line, against the same real server; the reading of vLLM's ``top_logprobs`` is checked on vLLM's answer
shape (:func:`test_logprob_scores_read_vllms_top_logprobs`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bft.data.io import read_jsonl
from tests.helpers.in_process import run_in_process
from tests.helpers.openai_stub import StubJudge
from tests.helpers.transformers_server import free_port, transformers_server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# rewrites and eval answers greedy (the server and the in-process engine pick the same tokens); augment samples,
# each engine with its own random numbers (the tiny model's greedy instructions leave curation nothing to keep)
GREEDY = ["rewriter.temperature=0", "eval.temperature=0"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "transformers_serve.log"
    with transformers_server(log) as url:
        yield url


def bft(tmp: Path, *overrides: str, artifacts: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    artifacts = artifacts or tmp / "artifacts"
    run_dir = tmp / f"run{len(list(tmp.glob('run*')))}"
    cmd = [sys.executable, "-m", "bft.cli", *overrides, f"run.artifacts_dir={artifacts}", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **(env or {})}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=900)
    result.run_dir = run_dir  # type: ignore[attr-defined]
    return result


def stage_counts(run_dir: Path) -> dict[str, tuple[int, int]]:
    stages = json.loads((run_dir / "summary.json").read_text())["stages"]
    return {name: (s["in"], s["out"]) for name, s in stages.items()}


def manifest_folder(run_dir: Path, store: str, stage: str) -> Path:
    key = json.loads((run_dir / "summary.json").read_text())["stages"][stage]["key"]
    (folder,) = (run_dir.parent / store).glob(f"*/{key}")
    return folder


def manifest(run_dir: Path, store: str, stage: str) -> dict:
    return json.loads((manifest_folder(run_dir, store, stage) / "manifest.json").read_text())


def test_greedy_served_generation_is_the_in_process_generation_on_real_documents(server):
    """The embedded model on real documents' backtranslation prompts: the same text, token counts and ends."""
    from omegaconf import OmegaConf

    from bft.config.schema import GenerationConfig, ServerConfig
    from bft.generation.base import Sampling
    from bft.generation.factory import make_backend
    from bft.prompts import backtranslation_prompt, render_chat

    served = make_backend(OmegaConf.structured(GenerationConfig(backend="served", server=ServerConfig(url=server))), "smollm2_135m")
    local = make_backend(OmegaConf.structured(GenerationConfig(backend="hf", dtype="float32", device="cpu")), "smollm2_135m")
    corpus = REPO / "bft" / "data" / "embedded"
    docs = [r["text"][:400] for r in read_jsonl(corpus / "corpus.jsonl")][:2]  # prefill is most of the time
    prompts = [render_chat(local.tokenizer, backtranslation_prompt(d))[0] for d in docs]
    sampling = Sampling(do_sample=False, temperature=0.0, max_new_tokens=16)
    try:
        got, want = served.generate(prompts, sampling, seed=3), local.generate(prompts, sampling, seed=3)
    finally:
        served.close()
    assert [(c.text, c.new_tokens, c.finished) for c in got] == [(c.text, c.new_tokens, c.finished) for c in want]
    assert served.stats()["requests"] == len(prompts) and served.stats()["new_tokens"] == sum(c.new_tokens for c in want)


# Stages the served run takes from the in-process store: no generation in them, and their keys are the served
# run's (placement is not in keys), so the served run reuses them instead of training three models again.
COPIED = ("seed", "corpus", "backward_model", "seed_model", "final_model")


def test_smoke_run_through_the_server_gives_the_in_process_counts(server, tmp_path):
    """``bft debug=smoke`` with its generating stages on the server (trained adapters merged into folders the
    server loads by path; curation scores by logprobs, which transformers serve does not return, so it stays in
    process) finishes with the in-process run's record counts. Separate stores for the generation stages: placement
    is not in the keys."""
    common = ["debug=smoke", "generation.dtype=float32", *GREEDY]
    local_run = tmp_path / "run_local"
    run_in_process(local_run, *common, f"run.artifacts_dir={tmp_path / 'local'}")
    for stage in COPIED:
        shutil.copytree(tmp_path / "local" / stage, tmp_path / "served" / stage)
    server_settings = [
        f"generation.server.url={server}",
        "generation.server.stages=[augment,rewrite,eval_outputs,base_outputs]",
        """+generation.server.extra_body.generation_config='{"do_sample": true, "top_k": 0}'""",  # sample as asked
    ]
    served = bft(tmp_path, *common, *server_settings, artifacts=tmp_path / "served")
    assert served.returncode == 0, served.stderr[-3000:]
    counts = stage_counts(served.run_dir)
    assert counts == stage_counts(local_run) and counts["augment"][1] > 0
    summary = json.loads((served.run_dir / "summary.json").read_text())["stages"]
    assert [name for name, s in summary.items() if s["reused"]] == list(COPIED)
    for stage in ("augment", "rewrite", "eval_outputs", "base_outputs"):
        assert manifest(served.run_dir, "served", stage)["metrics"]["device"].startswith("server:http://127.0.0.1"), stage
        assert manifest(local_run, "local", stage)["metrics"]["device"] == "cpu", stage
    assert manifest(served.run_dir, "served", "curate_0")["metrics"]["device"] == "cpu"
    pairs = read_jsonl(manifest_folder(served.run_dir, "served", "augment") / "candidates.jsonl")
    assert all(p["instruction"] and p["backward_model"] for p in pairs)


def test_logprob_curation_on_a_server_without_logprobs_is_refused_before_any_work(server, tmp_path):
    result = bft(tmp_path, "debug=smoke", "curation.scoring=logprob", "generation.backend=served", f"generation.server.url={server}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "answers without logprobs" in lines[0] and "curation.scoring=generate" in lines[0], lines
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())


def test_a_model_the_server_does_not_serve_is_refused_before_any_work(server, tmp_path):
    overrides = ["generation.backend=served", f"generation.server.url={server}", "generation.server.model=no-such-model"]
    result = bft(tmp_path, "debug=smoke", "curation.scoring=generate", *overrides)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-model" in lines[0] and "generation.server.model" in lines[0], lines


def test_an_unreachable_server_is_refused_before_any_work(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    result = bft(tmp_path, "debug=smoke", "curation.scoring=generate", "generation.backend=served", f"generation.server.url={url}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0] and url.removesuffix("/v1") in lines[0], lines
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())


def test_a_refused_key_is_refused_before_any_work_and_never_written(tmp_path):
    """A server that checks keys (the loopback stub answers 401 as vLLM's ``--api-key`` does)."""
    with StubJudge(api_key="the-right-key") as stub:
        overrides = ["generation.backend=served", f"generation.server.url={stub.url}", "generation.server.api_key_env=BFT_TEST_KEY"]
        result = bft(tmp_path, "debug=smoke", "curation.scoring=generate", *overrides, env={"BFT_TEST_KEY": "a-wrong-key"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused the key (401)" in lines[0] and "api_key_env" in lines[0], lines
    assert "a-wrong-key" not in result.stderr + result.stdout


def test_logprob_scores_read_vllms_top_logprobs():
    """vLLM's /v1/completions answer with ``logprobs: k``: the first position's top tokens; a score token the server
    did not list gets the least listed logprob."""
    from bft.generation.served import ServerUnusableError, _candidate_logprobs
    from bft.tasks.pair_rating import expected_score

    answer = {"choices": [{"text": "4", "logprobs": {"tokens": ["4"], "top_logprobs": [{"4": -0.2, " 5": -1.9, "3": -3.0}]}}]}
    scores = _candidate_logprobs(answer, ["1", "2", "3", "4", "5"], "here")
    assert scores == [-3.0, -3.0, -3.0, -0.2, -1.9]
    assert 3.5 < expected_score(scores)[0] < 4.5
    with pytest.raises(ServerUnusableError, match="without logprobs"):
        _candidate_logprobs({"choices": [{"text": "4", "logprobs": None}]}, ["1"], "here")


def test_the_weighted_judge_on_a_server_without_logprobs_is_refused_before_any_work(server, tmp_path):
    """The served judge's AE2 weighted scheme reads the m/M logprobs: a real server that returns none is refused
    in one line before any generation (the same check passes on a server that does: tests/test_eval_endpoint.py)."""
    from bft.models.registry import resolve_model_path

    judge = [f"eval.judge_url={server}", f"eval.judge_model={resolve_model_path('tiny')}"]
    result = bft(tmp_path, "debug=smoke", "eval.annotator=openai_compatible", *judge)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "answers without logprobs" in lines[0] and "judge_api_scheme" in lines[0], lines
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())


def test_a_text_scheme_judges_through_the_real_server(server, tmp_path):
    """A scheme that parses the judge's text (alpaca_eval_gpt4's ranking) runs through the served judge: every pair
    goes to the real server and its answer is judged by alpaca_eval's parser. A tiny random judge's answers never
    parse (alpaca_eval records -1), so there is no win rate to compute and alpaca_eval says so."""
    from bft.eval.annotators import check_annotator_ready
    from bft.eval.endpoint import endpoint_from
    from bft.eval.score import score_outputs
    from bft.models.registry import resolve_model_path

    ep = endpoint_from(server, resolve_model_path("tiny"), None, "alpaca_eval_gpt4")
    check_annotator_ready("openai_compatible", ep)
    rows = [{"instruction": f"Say {w}.", "dataset": "t"} for w in ("yes", "no", "hello")]
    model = [{**r, "output": f"{r['instruction'][4:-1]}!", "generator": "m"} for r in rows]
    reference = [{**r, "output": "I cannot.", "generator": "ref"} for r in rows]
    with pytest.raises(ValueError, match="no valid preference"):
        score_outputs(model, reference, "openai_compatible", tmp_path / "eval", judge_orders=1, endpoint=ep)
    judged = json.loads((tmp_path / "eval" / "annotations_cache.json").read_text())
    assert sorted(a["instruction"] for a in judged) == sorted(r["instruction"] for r in rows)
    assert all(a["preference"] == -1 for a in judged)
