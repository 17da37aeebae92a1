"""eval.inference_tag: which training tag(s) the final model is asked with (HB Table 4), and that the eval outputs'
artifact key hashes the text the model is really given. Config only: nothing loads a model."""

from __future__ import annotations

import pytest
from omegaconf import DictConfig

from bft.artifacts.store import ArtifactStore
from bft.config.validate import validate
from bft.errors import ConfigError
from bft.eval.inference_tags import inference_tag_kind, inference_tag_text, train_tags_kind
from bft.pipeline.plan import build_plan
from bft.pipeline.roles import resolve

S_A, S_W = "Answer in the style of an AI Assistant.", "Answer with knowledge from web search."
BFT_BOTH = "Answer in the style of an AI Assistant, with knowledge from web search if needed."


@pytest.mark.parametrize(
    ("setting", "text"),
    [("seed", S_A), ("web", S_W), ("both", f"{S_A} {S_W}"), ("none", ""), (BFT_BOTH, BFT_BOTH), (S_A, S_A)],
)
def test_inference_tag_text(setting: str, text: str):
    assert inference_tag_text(setting, S_A, S_W) == text
    assert inference_tag_text(text, S_A, S_W) == text  # resolving twice changes nothing


def test_inference_tag_kind_and_train_tags():
    assert [inference_tag_kind(t, S_A, S_W) for t in (S_A, S_W, f"{S_A} {S_W}", "", BFT_BOTH)] == [
        "seed",
        "web",
        "both",
        "none",
        "custom",
    ]
    assert train_tags_kind(S_A, S_W) == "seed/web" and train_tags_kind("", "") == "none"


def test_an_unknown_inference_tag_fails_in_one_line_before_any_work(compose_cfg):
    with pytest.raises(ConfigError, match=r"eval.inference_tag='bothh' is not one of seed, web, both, none") as err:
        validate(compose_cfg("eval.inference_tag=bothh"))
    assert "\n" not in str(err.value)


def _keys(cfg: DictConfig) -> dict[str, str]:
    store, keys = ArtifactStore("/nonexistent"), {}
    for step in build_plan(cfg):
        keys[step.name] = store.key_for(step.stage.name, step.config, {k: keys[v] for k, v in step.upstream.items()})
    return keys


def _eval_tag(cfg: DictConfig) -> str:
    return next(s for s in build_plan(cfg) if s.name == "eval_outputs").slice.eval.inference_tag


def test_the_eval_outputs_key_hashes_the_tag_text(compose_cfg):
    default, both, literal = compose_cfg(), compose_cfg("eval.inference_tag=both"), compose_cfg(f"eval.inference_tag='{S_A}'")
    assert _eval_tag(default) == S_A and _eval_tag(both) == f"{S_A} {S_W}"  # the eval stage is given the text
    a, b, c = _keys(default), _keys(both), _keys(literal)
    assert a["final_model"] == b["final_model"] and a["eval_outputs"] != b["eval_outputs"]
    assert a == c  # "seed" and the seed tag's own text are one setting: one artifact
    assert a["eval_outputs"] != _keys(compose_cfg("eval.inference_tag=none"))["eval_outputs"]


def test_humpback_paper_has_humpbacks_roles_and_both_tags(compose_cfg):
    cfg = resolve(compose_cfg("+experiment=humpback_paper"))
    final = cfg.final_model.name
    assert final == "meta-llama/Llama-2-7b-hf" and cfg.backward_model.name == final and cfg.curation_model.name == final
    assert cfg.eval.inference_tag == f"{cfg.sft.seed_tag} {cfg.sft.web_tag}"
    bft = resolve(compose_cfg("+experiment=backandforth_paper"))
    assert bft.backward_model.name == "meta-llama/Llama-2-70b-hf" and bft.eval.inference_tag == bft.sft.seed_tag
