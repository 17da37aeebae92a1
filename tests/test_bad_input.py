"""Bad input and bad configs give one clear line naming the file, line or key, and never a traceback."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bft.cli.main import precheck_overrides

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)

REPO = Path(__file__).resolve().parents[1]


TOPICS = [
    "gardening and soil health",
    "bicycle maintenance",
    "sourdough baking",
    "river kayaking",
    "home insulation",
    "chess openings",
]


def good_documents() -> list[str]:
    """Six distinct good documents, one JSONL line each."""
    lines = []
    for i, topic in enumerate(TOPICS):
        body = " ".join(f"Step {k} of a practical guide to {topic}, with detail number {k * 7 + i}." for k in range(12))
        lines.append(json.dumps({"id": f"d{i}", "text": body}) + "\n")
    return lines


def write_bad_corpus(path: Path) -> Path:
    """Six distinct good documents, then one bad line of each kind (lines 7 to 11)."""
    with path.open("wb") as handle:
        handle.write("".join(good_documents()).encode())
        handle.write(b'{"id": "broken", "text": "unterminated\n')  # line 7: malformed JSON
        handle.write(b'{"id": "empty", "text": ""}\n')  # line 8: empty document
        handle.write(b'{"id": "latin1", "text": "caf\xe9 au lait"}\n')  # line 9: not UTF-8
        handle.write(b'{"id": "d0", "text": "duplicate id"}\n')  # line 10: duplicate id
        handle.write(b'{"id": "notext"}\n')  # line 11: missing field
    return path


def run_cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "bft.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_malformed_corpus_fails_with_one_line_naming_file_and_line(tmp_path):
    corpus = write_bad_corpus(tmp_path / "docs.jsonl")
    result = run_cli(
        "debug=smoke",
        "corpus=file",
        f"corpus.source={corpus}",
        f"run.artifacts_dir={tmp_path / 'a'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("bft: error:")]
    assert len(errors) == 1 and f"{corpus}:7" in errors[0]
    assert "Traceback" not in result.stderr
    # the seed artifact computed before the failure is kept, complete
    assert list((tmp_path / "a" / "seed").glob("*/manifest.json"))


def test_a_document_past_the_models_context_is_dropped_and_counted_by_the_corpus_stage(tmp_path, capsys):
    """No stage stops on it: the corpus stage's context budget (bft.context_budget) drops it, counts it in
    filters.json and the run summary, and the run finishes. In this process: the command's config and pipeline
    (tests/helpers/in_process.py) and its summary table; the command's own failures are the tests around it."""
    from helpers.in_process import run_in_process

    from bft.pipeline.runner import print_summary

    rng = random.Random(0)
    words = [topic.split()[0] for topic in TOPICS] + ["the", "a", "of", "soil", "chain", "dough", "river", "wall", "board", "fire"]
    corpus = tmp_path / "docs.jsonl"
    with corpus.open("w") as handle:
        handle.writelines(good_documents())
        sentences = (" ".join(rng.choice(words) for _ in range(12)).capitalize() + "." for _ in range(900))
        handle.write(json.dumps({"id": "long", "text": " ".join(sentences)}) + "\n")  # ~60k characters
    overrides = ["debug=smoke", "corpus=file", f"corpus.source={corpus}", "corpus.max_chars=100000"]
    print_summary(run_in_process(tmp_path / "run", *overrides, f"run.artifacts_dir={tmp_path / 'a'}"))
    report = json.loads(next((tmp_path / "a" / "corpus").glob("*/filters.json")).read_text())
    context = next(f for f in report["filters"] if f["filter"] == "context")
    assert context["removed"] == 1 and [e["id"] for e in context["examples"]] == ["long"]
    assert {b["context"] for b in report["context_budget"]} == {2048}  # the tiny model's max_position_embeddings
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["corpus_filters"]["removed"]["context"] == 1
    assert "context 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["no_such_key=3"],
        ["seed.size=many"],
        ["curation.scoring=vibes"],
        ["model=/definitely/not/a/model"],
        ["model.name=/definitely/not/a/model"],
        ["rewriter=unknown_rewriter"],
        ["eval.annotator=alpaca_eval_gpt4"],
        ["seed=file", "seed.source=/no/such/seed.jsonl"],
        ["backward_model.dtype=float32"],  # debug=smoke leaves the role null: not a traceback from OmegaConf
    ],
)
def test_bad_configs_fail_fast_in_one_line(tmp_path, args):
    env_args = [*args, "debug=smoke", f"run.artifacts_dir={tmp_path / 'a'}", f"hydra.run.dir={tmp_path / 'run'}"]
    saved = os.environ.pop("OPENAI_API_KEY", None)
    try:
        result = run_cli(*env_args, cwd=tmp_path, timeout=120)
    finally:
        if saved is not None:
            os.environ["OPENAI_API_KEY"] = saved
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-1500:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("bft: error:")]
    assert len(errors) == 1, result.stderr[-1500:]
    assert not (tmp_path / "a" / "backward_model").exists()  # nothing trained before the error


def test_fuzzed_overrides_never_crash_the_checker():
    rng = random.Random(0)
    keys = [
        "seed.size",
        "curation.threshold",
        "curation.iterations",
        "sft.final.lr",
        "generation.batch_size",
        "corpus.min_chars",
        "rewriter.mode",
        "peft.method",
        "data.on_error",
        "eval.max_instances",
    ]
    values = ["-1", "0", "abc", "1e9", "null", "[1,2]", "{a: 1}", "''", "5.5", "true", "%%%"]
    drawn = [f"{rng.choice(keys)}={rng.choice(values)}" for _ in range(60)]
    for override in dict.fromkeys(drawn):  # 46 distinct: the checker is deterministic, a repeat checks nothing new
        problem = precheck_overrides([override])  # composes and validates, as `bft` does before any work
        assert problem is None or "\n" not in problem, (override, problem)
