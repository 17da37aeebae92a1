"""W&B as researchers use it: one offline job per computed stage, artifacts that use their inputs, read back.

The steps below are real ``Step``s run by the real ``run_step`` and the real offline ``RunLogger``; only their
compute functions are test-only (they write small files instead of training models).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.wandb_offline import read_jobs, read_records
from omegaconf import OmegaConf

from bft.artifacts.store import ArtifactStore, StageOutput
from bft.config.schema import LoggerConfig
from bft.logger.run_logger import RunLogger
from bft.pipeline.context import RunContext
from bft.pipeline.plan import Step
from bft.pipeline.runner import run_step
from bft.pipeline.stage import Stage

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)


def _write_records(name: str, rows: list[dict]):
    def compute(ctx, upstream, work: Path) -> StageOutput:
        with (work / name).open("w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        return StageOutput(counts={"in": len(rows), "out": len(rows)}, metrics={"mean_score": 4.5})

    return compute


def _write_model(ctx, upstream, work: Path) -> StageOutput:
    (work / "model").mkdir()
    (work / "model" / "adapter_config.json").write_text("{}")
    return StageOutput(counts={"in": 2, "out": 2})


ROWS = [{"id": "d1", "instruction": "How do I bake bread?", "text": "raw web text", "score": 5, "output": "Rewritten."}]
SEED = Stage("seed", (), ("seed.jsonl",), ("v",), _write_records("seed.jsonl", ROWS))
CORPUS = Stage("corpus", (), ("corpus.jsonl",), ("v",), _write_records("corpus.jsonl", ROWS))
MODEL = Stage("backward_model", ("seed",), ("model/",), ("v",), _write_model)
REWRITE = Stage("rewrite", ("corpus", "backward_model"), ("generated.jsonl",), ("v",), _write_records("generated.jsonl", ROWS))


def _slice(v: int):
    return OmegaConf.create({"v": v})


def _plan(variant: int) -> list[Step]:
    return [
        Step("seed", SEED, {}, _slice(0)),
        Step("corpus", CORPUS, {}, _slice(0)),
        Step("backward_model", MODEL, {"seed": "seed"}, _slice(0)),
        Step("rewrite", REWRITE, {"corpus": "corpus", "backward_model": "backward_model"}, _slice(variant)),
    ]


def _run(
    tmp_path: Path, run_name: str, variant: int, group: str | None = None, overrides: list[str] | None = None, config=None
) -> Path:
    import wandb

    run_dir = tmp_path / run_name
    run_dir.mkdir(parents=True)
    cfg = OmegaConf.structured(LoggerConfig(mode="offline", group=group))
    logger = RunLogger(cfg, run_dir, config or {"variant": variant}, name=run_name, overrides=overrides or [])
    ctx = RunContext(cfg=OmegaConf.create({}), store=ArtifactStore(tmp_path / "store"), run_dir=run_dir, logger=logger)
    for step in _plan(variant):
        run_step(ctx, step)
    logger.finish()
    wandb.teardown()  # flush every offline run file before reading it back
    return run_dir


@pytest.fixture(autouse=True)
def _wandb_offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_one_job_per_computed_stage_with_lineage(tmp_path):
    first = read_jobs(_run(tmp_path, "first", variant=0, group="sweep-a"))
    by_type = {job.job_type: job for job in first}
    assert sorted(by_type) == ["backward_model", "corpus", "pipeline", "rewrite", "seed"]
    assert len(first) == 5 and {job.group for job in first} == {"sweep-a"}
    seed, corpus, model, rewrite = (by_type[t] for t in ("seed", "corpus", "backward_model", "rewrite"))
    assert [a for a in seed.logged if not a.startswith("run-")] == [f"seed-{_key(tmp_path, 'seed')}"]
    assert model.used == seed.logged
    assert sorted(rewrite.used) == sorted(corpus.logged + model.logged)
    # the use of an artifact and its logging carry the same digest: W&B links them on sync
    assert rewrite.digests[model.logged[0]] == model.digests[model.logged[0]]
    assert "counts/out" in rewrite.history_keys and "metrics/mean_score" in rewrite.history_keys
    assert any(name.endswith("-samples") for name in rewrite.logged)  # the sample table
    assert sorted(by_type["pipeline"].used) == sorted(seed.logged + corpus.logged + model.logged + [rewrite.logged[-1]])
    assert all(job.exit_code == 0 for job in first)

    # a second run reuses seed, corpus and the model: only rewrite is a new job, and it links the reused artifacts
    second = read_jobs(_run(tmp_path, "second", variant=1, group="sweep-a"))
    assert sorted(job.job_type for job in second) == ["pipeline", "rewrite"]
    rewrite2 = next(job for job in second if job.job_type == "rewrite")
    assert sorted(rewrite2.used) == sorted(corpus.logged + model.logged)
    assert rewrite2.digests[corpus.logged[0]] == corpus.digests[corpus.logged[0]]


def _key(tmp_path: Path, stage: str) -> str:
    return next(p.name for p in (tmp_path / "store" / stage).iterdir() if (p / "manifest.json").is_file())


def test_default_group_is_the_run(tmp_path):
    jobs = read_jobs(_run(tmp_path, "solo", variant=0))
    assert len({job.group for job in jobs}) == 1 and jobs[0].group.startswith("solo-")


def test_reader_rejects_other_files(tmp_path):
    bogus = tmp_path / "run-x.wandb"
    bogus.write_bytes(b"not a wandb log")
    with pytest.raises(ValueError, match="not a W&B run log"):
        list(read_records(bogus))


def test_sweep_jobs_are_named_and_tagged_by_their_overrides_and_keep_token_settings(tmp_path, monkeypatch):
    planted = "sk-planted-judge-key-0123456789"
    monkeypatch.setenv("MY_JUDGE_KEY", planted)
    config = {
        "generation": {"max_new_tokens": 64},
        "corpus": {"tokenizer": "tiny", "max_tokens": 4000},
        "eval": {"judge_api_key_env": "MY_JUDGE_KEY", "judge_url": f"http://127.0.0.1:1/v1?key={planted}"},
    }
    jobs = []
    for i, override in enumerate(("rewriter=none", "rewriter=seed_model")):
        folder = _run(tmp_path / str(i), "backandforth", variant=i, group="sweep-b", overrides=[override], config=config)
        jobs += read_jobs(folder)
    pipelines = [job for job in jobs if job.job_type == "pipeline"]
    assert sorted(job.name for job in pipelines) == ["backandforth[rewriter=none]", "backandforth[rewriter=seed_model]"]
    assert {job.group for job in jobs} == {"sweep-b"}
    assert sorted(tag for job in pipelines for tag in job.tags) == ["rewriter=none", "rewriter=seed_model"]
    assert "backandforth[rewriter=none]/rewrite" in {job.name for job in jobs}
    logged = {key: json.loads(value) for key, value in pipelines[0].config.items()}
    assert logged["generation"]["max_new_tokens"] == 64 and logged["corpus"]["tokenizer"] == "tiny"
    assert logged["eval"]["judge_api_key_env"] == "MY_JUDGE_KEY"  # a variable's name is no secret
    assert logged["eval"]["judge_url"] == "<redacted>"  # its value is, wherever it appears
    assert planted not in json.dumps(logged)


def test_job_overrides_leave_out_where_a_run_is_stored_and_logged(monkeypatch):
    from types import SimpleNamespace

    from hydra.core.hydra_config import HydraConfig

    from bft.logger import run_logger

    task = ["+experiment=humpback_local", "seed.size=100", "run.artifacts_dir=/tmp/a", "logger=wandb_offline", "hydra.verbose=true"]
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: SimpleNamespace(overrides=SimpleNamespace(task=task))))
    assert run_logger.job_overrides() == ["experiment=humpback_local", "seed.size=100"]
    assert run_logger.job_name("humpback", run_logger.job_overrides()) == "humpback[experiment=humpback_local,seed.size=100]"
