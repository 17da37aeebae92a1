"""Model registry: embedded names, any local save_pretrained folder, hub ids, and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bft.config.schema import GenerationConfig, PeftConfig, SFTStageConfig, TrainerConfig
from bft.models.registry import ModelNotFoundError, load_model, load_tokenizer, resolve_model_path

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)


@pytest.fixture(scope="module")
def local_folder(tmp_path_factory) -> Path:
    """A causal LM saved with save_pretrained, as a user would have on disk."""
    folder = tmp_path_factory.mktemp("my_model")
    loaded = load_model("tiny", dtype="float32")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def test_local_folder_trains_and_generates(local_folder, tmp_path):
    from bft.generation.base import Sampling
    from bft.generation.factory import make_backend
    from bft.models.registry import load_model as load
    from bft.prompts import render_chat
    from bft.sft.train import train_sft

    assert resolve_model_path(str(local_folder)) == str(local_folder.resolve())
    examples = [{"prompt": f"Say {w}.", "completion": w} for w in ("red", "green", "blue", "cyan")]
    stage = SFTStageConfig(max_steps=1, batch_size=4, micro_batch_size=4, max_seq_len=128)
    result = train_sft(
        examples,
        str(local_folder),
        tmp_path / "train",
        stage,
        PeftConfig(),
        TrainerConfig(precision="32-true", enable_progress_bar=False),
        seed=0,
    )
    assert load(str(local_folder), adapter=result.model_dir).model is not None
    backend = make_backend(GenerationConfig(dtype="float32"), str(local_folder), adapter=result.model_dir)
    tokenizer = load_tokenizer(str(local_folder))
    out = backend.generate([render_chat(tokenizer, "Say red.")[0]], Sampling(max_new_tokens=4), seed=0)
    assert len(out) == 1 and out[0].new_tokens >= 1


def test_cli_accepts_a_model_folder(local_folder, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bft.cli",
            f"model={local_folder}",
            "debug=smoke",
            "run.dry_run=true",
            f"run.artifacts_dir={tmp_path}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-1500:]
    assert "backward_model" in result.stdout


def test_missing_or_invalid_models_fail_clearly(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a registered name"):
        resolve_model_path("/no/such/model/folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model_path(str(tmp_path / "empty"))
    assert resolve_model_path("meta-llama/Llama-2-7b-hf") == "meta-llama/Llama-2-7b-hf"  # hub ids pass through
    assert resolve_model_path("llama2_70b_chat") == "meta-llama/Llama-2-70b-chat-hf"


def test_tokenizer_without_chat_template_is_refused_naming_the_key(no_template_model):
    from bft.config.validate import ConfigError

    with pytest.raises(ConfigError) as err:
        load_tokenizer(str(no_template_model))
    message = str(err.value)
    assert "\n" not in message and message.startswith("model.chat_template:") and "llama2_inst" in message


def test_a_tokenizer_is_loaded_once_per_folder_and_prompt_format(local_folder, tmp_path):
    """One object per (folder, format) in a process; another format, or the folder rewritten, loads again."""
    import shutil

    first = load_tokenizer(str(local_folder))
    assert load_tokenizer(str(local_folder)) is first
    chatml = load_tokenizer(str(local_folder), chat_template="chatml")
    assert chatml is not first and chatml.chat_template != first.chat_template
    copy = tmp_path / "copy"
    shutil.copytree(local_folder, copy)
    before = load_tokenizer(str(copy))
    (copy / "tokenizer_config.json").write_text((copy / "tokenizer_config.json").read_text() + "\n")
    assert load_tokenizer(str(copy)) is not before


def test_roles_sharing_a_folder_and_template_share_one_tokenizer(local_folder, no_template_model):
    """The config key only names errors: two roles with the same template text get one object, and a key whose
    setting leaves no template still fails naming that key."""
    from bft.config.validate import ConfigError
    from bft.models.registry import load_plain_tokenizer

    backward = load_tokenizer(str(local_folder), "chatml", "backward_model.chat_template")
    assert load_tokenizer(str(local_folder), "chatml", "rewriter.chat_template") is backward
    plain = load_plain_tokenizer(str(local_folder))
    assert load_plain_tokenizer(str(local_folder)) is plain and plain is not backward
    assert plain.chat_template != backward.chat_template  # the shared plain one keeps the template it ships
    with pytest.raises(ConfigError, match=r"^rewriter\.chat_template: model"):
        load_tokenizer(str(no_template_model), None, "rewriter.chat_template")


def test_folders_with_the_same_tokenizer_files_share_one_tokenizer(local_folder, tmp_path):
    """Every model a run trains saves its base model's tokenizer: one parse for all of them; a tokenizer file
    rewritten in place is read again."""
    import shutil

    copies = [shutil.copytree(local_folder, tmp_path / name) for name in ("backward_model", "final_model")]
    (copies[1] / "model.safetensors").unlink()  # the weights are not what a tokenizer is made of
    first, second = (load_tokenizer(str(c), "chatml", "model.chat_template") for c in copies)
    assert second is first and load_tokenizer(str(local_folder), "chatml", "model.chat_template") is first
    config = copies[1] / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"pad_token"', '"cls_token": "<|im_start|>", "pad_token"'))
    changed = load_tokenizer(str(copies[1]), "chatml", "model.chat_template")
    assert changed is not first and changed.cls_token == "<|im_start|>" and first.cls_token is None
