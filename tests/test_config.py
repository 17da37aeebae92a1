"""Every experiment and sweep file composes, validates and yields a runnable plan with debug=smoke."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bft.config.validate import ConfigError, validate
from bft.pipeline.plan import build_plan

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
FILE_KEYS = ["data.baseline_file=/tmp/pairs.jsonl", "corpus.source=/tmp/docs.jsonl"]


def _fill_required(cfg_overrides: list[str], experiment: str) -> list[str]:
    text = (REPO / "experiments" / f"{experiment}.yaml").read_text()
    extra = [o for o in FILE_KEYS if o.split("=")[0].split(".")[-1] + ": ???" in text or "corpus_file" in experiment]
    return cfg_overrides + extra


def test_default_config_is_the_embedded_backandforth(compose_cfg):
    cfg = compose_cfg()
    validate(cfg)
    assert cfg.method == "backandforth"
    assert cfg.model.name == "smollm2_135m"
    assert cfg.rewriter.name == "smollm2_135m"
    assert cfg.eval.annotator == "local"
    steps = [s.name for s in build_plan(cfg)]
    assert steps[:4] == ["seed", "corpus", "backward_model", "augment"]
    assert steps[-1] == "evaluate"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_dry_runs_with_smoke(compose_cfg, experiment):
    overrides = _fill_required([f"+experiment={experiment}", "debug=smoke"], experiment)
    cfg = compose_cfg(*overrides)
    validate(cfg)
    assert OmegaConf.missing_keys(cfg) == set()
    plan = build_plan(cfg)
    assert plan[-1].name == "evaluate"
    assert cfg.model.name == "tiny"
    for tag in cfg.tags:
        assert isinstance(tag, str)


@pytest.mark.slow  # composes every value of every sweep (about 10 s)
@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_composes_and_each_value_is_a_valid_override(compose_cfg, sweep):
    cfg = compose_cfg(f"+sweep={sweep}", "debug=smoke", hydra_cfg=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.logger.group == sweep
    params = cfg.hydra.sweeper.params
    assert params, f"sweep {sweep} declares no parameters"
    for key, values in params.items():
        for value in str(values).split(","):
            job = compose_cfg(f"+sweep={sweep}", "debug=smoke", f"{key}={value}")
            validate(job)
            build_plan(job)


@pytest.mark.parametrize(
    ("method", "expected", "absent"),
    [
        ("humpback", ["curate_0", "curation_model_1", "curate_1", "rewrite"], []),
        ("filter_only", ["curate_0", "rewrite"], ["curation_model_1"]),
        ("rewrite_only", ["rewrite"], ["seed_model", "curate_0"]),
        ("distill", ["curate_0", "rewrite"], []),
    ],
)
def test_methods_are_small_deltas_with_the_right_stages(compose_cfg, method, expected, absent):
    cfg = compose_cfg(f"method={method}")
    names = [s.name for s in build_plan(cfg)]
    for name in expected:
        assert name in names
    for name in absent:
        assert name not in names
    if method in ("humpback", "filter_only"):
        assert cfg.rewriter.name == "none"
    if method == "distill":
        assert cfg.rewriter.mode == "distill"


def test_changing_only_the_rewriter_keeps_the_trained_models_keys(compose_cfg, tmp_path):
    """The rewrite prompt is part of the corpus stage's context budget, so a new rewriter re-cleans the corpus (and
    what reads it); the models trained on the seed are reused."""
    from bft.pipeline.dryrun import plan_table

    a = {r["step"]: r["key"] for r in plan_table(compose_cfg(f"run.artifacts_dir={tmp_path}"))}
    b = {r["step"]: r["key"] for r in plan_table(compose_cfg(f"run.artifacts_dir={tmp_path}", "rewriter=none"))}
    for step in ("seed", "backward_model", "seed_model"):
        assert a[step] == b[step]
    for step in ("corpus", "augment", "curate_0", "rewrite", "train_data", "final_model", "eval_outputs", "evaluate"):
        assert a[step] != b[step]
    assert a["base_outputs"] == b["base_outputs"]


def test_seed_size_changes_seed_but_not_corpus_keys(compose_cfg, tmp_path):
    from bft.pipeline.dryrun import plan_table

    a = {r["step"]: r["key"] for r in plan_table(compose_cfg("seed.size=16"))}
    b = {r["step"]: r["key"] for r in plan_table(compose_cfg("seed.size=32"))}
    assert a["corpus"] == b["corpus"] and a["base_outputs"] == b["base_outputs"]
    assert a["seed"] != b["seed"] and a["backward_model"] != b["backward_model"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("curation.scoring=bogus", "curation.scoring"),
        ("sft.final.lr_floor_ratio=9e-6", None),
        ("sft.seed.grouping=zigzag", "sft.seed.grouping"),
        ("curation.iterations=0", "curation.iterations"),
        ("curation.top_fraction=1.5", "curation.top_fraction"),
        ("data.on_error=ignore", "data.on_error"),
    ],
)
def test_bad_values_fail_with_a_message_naming_the_key(compose_cfg, override, message):
    cfg = compose_cfg(override)
    if message is None:  # a small ratio is valid: the floor is a ratio, checked to lie in [0, 1]
        validate(cfg)
        return
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate(cfg)


def test_unknown_key_and_bad_type_fail_in_one_line():
    from bft.cli.main import precheck_overrides

    unknown = precheck_overrides(["no_such_key=1"])
    assert unknown and "no_such_key" in unknown and "\n" not in unknown
    bad_type = precheck_overrides(["seed.size=abc"])
    assert bad_type and "seed.size" in bad_type and "\n" not in bad_type
    assert precheck_overrides(["seed.size=16", "rewriter=none"]) is None


def test_a_model_folder_expands_for_the_base_model_and_each_role(compose_cfg, tmp_path):
    from bft.cli.main import expand_model_overrides

    folder = tmp_path / "my_backward_model"
    folder.mkdir()
    argv = expand_model_overrides(["model=tiny", f"model@backward_model={folder}", "rewriter=/hub/org-chat", "seed.size=8"])
    expected = ["model=tiny", "model@backward_model=tiny", f"backward_model.name={folder}", "rewriter.name=/hub/org-chat"]
    assert argv == [*expected, "seed.size=8"]
    cfg = compose_cfg(*argv)
    assert (cfg.model.name, cfg.backward_model.name, cfg.rewriter.name) == ("tiny", str(folder), "/hub/org-chat")
    assert cfg.curation_model is None  # other roles still fall back to the base model
    default = compose_cfg(*expand_model_overrides([f"model@curation_model={folder}"]))
    assert (default.curation_model.name, default.curation_model.dtype) == (str(folder), default.model.dtype)
    options = ["model@final_model=llama2_7b", "model=smollm2_135m"]
    assert expand_model_overrides(options) == options


@pytest.mark.parametrize("preset", ["smoke", "paper_smoke"])
def test_bft_artifacts_places_the_store_of_a_debug_preset(compose_cfg, monkeypatch, preset, tmp_path):
    """``BFT_ARTIFACTS=/tmp/x bft debug=smoke`` stores under /tmp/x: conf/config.yaml's own run.artifacts_dir comes
    before the preset's; the command line still wins, and without a preset BFT_ARTIFACTS is not read."""
    monkeypatch.setenv("BFT_ARTIFACTS", str(tmp_path / "x"))
    experiment = ["+experiment=backandforth_paper"] if preset == "paper_smoke" else []
    assert compose_cfg(*experiment, f"debug={preset}").run.artifacts_dir == str(tmp_path / "x")
    assert compose_cfg(*experiment, f"debug={preset}", "run.artifacts_dir=elsewhere").run.artifacts_dir == "elsewhere"
    assert compose_cfg().run.artifacts_dir == "artifacts"
    monkeypatch.delenv("BFT_ARTIFACTS")
    assert compose_cfg(f"debug={preset}").run.artifacts_dir == "artifacts"


def test_paper_smoke_runs_every_role_and_the_rewriter_on_the_base_model(compose_cfg):
    from bft.pipeline.roles import roles

    cfg = compose_cfg("+experiment=backandforth_paper", "debug=paper_smoke", "model.name=/some/tiny")
    assert roles(cfg) == {
        "backward": "/some/tiny",
        "curation": "/some/tiny",
        "final": "/some/tiny",
        "rewriter": "/some/tiny",
        "judge": "alpaca_eval_gpt4",
    }
    assert cfg.rewriter.chat_template == "llama2_inst"  # the chat rewriter's prompt format stays
    assert roles(compose_cfg("+experiment=backandforth_paper", "debug=paper_smoke", "eval.annotator=local"))["judge"] == "tiny"
