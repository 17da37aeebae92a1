"""model.chat_template: named prompt formats, Jinja files, early one-line errors, and one rendering for
training and inference (a base model folder saved without a template, as base Llama-2 ships)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bft.config.validate import ConfigError
from bft.models.chat_templates import registered_setting, template_text
from bft.models.registry import load_tokenizer
from bft.models.template_roles import configure_chat_templates
from bft.prompts import render_chat

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_registry():
    from bft.models.chat_templates import clear_registered_templates

    clear_registered_templates()
    yield
    clear_registered_templates()


def test_llama2_inst_renders_meta_format(no_template_model):
    tok = load_tokenizer(str(no_template_model), "llama2_inst")
    bos, eos = tok.bos_token, tok.eos_token
    assert render_chat(tok, " Say hi. ") == (f"{bos}[INST] Say hi. [/INST]", "")
    assert render_chat(tok, "Say hi.", "Hello there.") == (f"{bos}[INST] Say hi. [/INST]", f" Hello there. {eos}")
    # a prefill sits where the assistant text starts: after the space that follows [/INST]
    assert render_chat(tok, "Q", "A", assistant_prefix="[RES]") == (f"{bos}[INST] Q [/INST] [RES]", f"A {eos}")
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}]
    assert tok.apply_chat_template(system, tokenize=False) == f"{bos}[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nQ [/INST]"


def test_chatml_and_jinja_file(no_template_model, tmp_path):
    tok = load_tokenizer(str(no_template_model), "chatml")
    assert render_chat(tok, "Q", "A") == ("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n", "A<|im_end|>\n")
    jinja = tmp_path / "plain.jinja"
    jinja.write_text(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    )
    tok = load_tokenizer(str(no_template_model), str(jinja))
    assert render_chat(tok, "Q", "A", assistant_prefix="[RES]") == ("user: Q\nassistant: [RES]", "A\n")


def test_model_setting_keeps_the_models_own_template():
    own = load_tokenizer("tiny").chat_template
    assert own and load_tokenizer("tiny", "model").chat_template == own


@pytest.mark.parametrize(
    ("setting", "match"),
    [("llama3", r"^model\.chat_template='llama3' is not one of model, llama2_inst, chatml"), ("/no/such.jinja", "no such Jinja file")],
)
def test_bad_setting_is_one_line(setting, match):
    with pytest.raises(ConfigError, match=match) as err:
        template_text(setting)
    assert "\n" not in str(err.value)


def test_pipeline_refuses_a_model_without_template_before_any_work(compose_cfg, no_template_model, tmp_path):
    from bft.pipeline.runner import run_pipeline

    artifacts = tmp_path / "artifacts"
    cfg = compose_cfg("debug=smoke", f"model.name={no_template_model}", f"run.artifacts_dir={artifacts}")
    with pytest.raises(ConfigError, match=r"^model\.chat_template: model '.*' ships no chat template") as err:
        run_pipeline(cfg, tmp_path / "run")
    assert "\n" not in str(err.value)
    assert not artifacts.exists()  # nothing ran


def test_role_settings_are_registered_per_model_name(compose_cfg, no_template_model):
    cfg = compose_cfg(
        "debug=smoke",
        f"model.name={no_template_model}",
        "model.chat_template=llama2_inst",
        "rewriter=llama2_70b_chat",
    )
    configure_chat_templates(cfg, check=False)
    assert registered_setting(str(no_template_model)) == ("llama2_inst", "model.chat_template")
    assert registered_setting("meta-llama/Llama-2-70b-chat-hf") == ("llama2_inst", "rewriter.chat_template")


def test_paper_model_configs_use_llama2_inst(compose_cfg):
    for model in ("llama2_7b", "llama2_70b"):
        assert compose_cfg(f"model={model}").model.chat_template == "llama2_inst"
    for rewriter in ("llama2_7b_chat", "llama2_70b_chat"):
        assert compose_cfg(f"rewriter={rewriter}").rewriter.chat_template == "llama2_inst"


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow  # a whole tiny pipeline run, about 2 minutes on 2 CPU cores
def test_llama2_inst_run_trains_and_generates_on_the_same_inst_prompts(compose_cfg, no_template_model, tmp_path, monkeypatch):
    """The whole pipeline on a base model without a template: every training prompt and every generation prompt is
    [INST]-formatted, and the seed model's training prompt equals the final model's eval prompt byte for byte."""
    import bft.sft.data as sft_data
    from bft.generation.hf import HFBackend
    from bft.pipeline.runner import run_pipeline

    seed = [
        {"instruction": f"Name a {w} thing and say why it is {w}.", "output": f"A {w} thing is the sky at some hour, it looks {w}."}
        for w in ("red", "green", "blue", "yellow", "white", "black", "brown", "pink")
    ]
    seed_file = _write_jsonl(tmp_path / "seed.jsonl", seed)
    eval_file = _write_jsonl(tmp_path / "eval.jsonl", [{"instruction": r["instruction"], "output": r["output"]} for r in seed[:3]])

    trained: list[tuple[str, str]] = []  # (user turn, rendered training prompt)
    real_render = sft_data.render_chat

    def spy_render(tokenizer, user, assistant=None, assistant_prefix=""):
        prompt, completion = real_render(tokenizer, user, assistant, assistant_prefix)
        trained.append((user, prompt))
        return prompt, completion

    generated: list[str] = []
    real_generate = HFBackend.generate

    def spy_generate(self, prompts, sampling, seed):
        generated.extend(prompts)
        return real_generate(self, prompts, sampling, seed)

    monkeypatch.setattr(sft_data, "render_chat", spy_render)
    monkeypatch.setattr(HFBackend, "generate", spy_generate)
    cfg = compose_cfg(
        "debug=smoke",
        "seed=file",
        f"seed.source={seed_file}",
        f"eval.set={eval_file}",
        f"model.name={no_template_model}",
        "model.chat_template=llama2_inst",
        f"rewriter.name={no_template_model}",
        "rewriter.chat_template=llama2_inst",
        f"run.artifacts_dir={tmp_path / 'artifacts'}",
    )
    (tmp_path / "run").mkdir()
    ctx = run_pipeline(cfg, tmp_path / "run")
    assert "final_model" in ctx.artifacts and "eval_outputs" in ctx.artifacts

    bos = load_tokenizer(str(no_template_model), "llama2_inst").bos_token
    assert trained and generated
    for prompt in [p for _, p in trained] + generated:
        assert prompt.startswith(f"{bos}[INST] ") and (prompt.endswith(" [/INST]") or prompt.endswith(" [/INST] [RES]")), prompt[-80:]

    from bft.pipeline.roles import resolve

    tag = resolve(cfg).eval.inference_tag  # eval.inference_tag=seed: the seed pairs' own tag
    assert tag == cfg.sft.seed_tag
    by_user = dict(trained)
    pairs = 0
    for row in seed[:3]:
        user = f"{row['instruction']}\n\n{tag}"
        eval_prompt = render_chat(load_tokenizer(str(no_template_model), "llama2_inst"), user)[0]
        assert eval_prompt in generated  # the final model was really asked exactly this
        if user in by_user:
            assert by_user[user].encode() == eval_prompt.encode()
            pairs += 1
    assert pairs >= 1  # seed.size=8 of 8 records: every eval instruction was also trained on
