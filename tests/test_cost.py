"""The dry run's cost estimate: FLOPs from parameters and tokens, hours on a stated GPU, and the paper plan."""

from __future__ import annotations

import json

import pytest

from bft.pipeline.cost import KNOWN_PARAMS, PEAK_TFLOPS, Work, flops, gpu_hours, params_from_config, total_hours

LLAMA2_7B = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "vocab_size": 32000,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "intermediate_size": 11008,
    "tie_word_embeddings": False,
}
LLAMA2_70B = {**LLAMA2_7B, "hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64}
LLAMA2_70B |= {"num_key_value_heads": 8, "intermediate_size": 28672}
SMOLLM2_135M = {
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "vocab_size": 49152,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "tie_word_embeddings": True,
}


@pytest.mark.parametrize(
    ("config", "expected"), [(LLAMA2_7B, 6_738_415_616), (LLAMA2_70B, 68_976_648_192), (SMOLLM2_135M, 134_515_008)]
)
def test_parameter_counts_from_config_match_the_published_models(config, expected):
    assert params_from_config(config) == expected


def test_known_sizes_agree_with_the_config_count():
    assert KNOWN_PARAMS["llama2_7b"] == params_from_config(LLAMA2_7B)
    assert KNOWN_PARAMS["meta-llama/Llama-2-70b-chat-hf"] == params_from_config(LLAMA2_70B)


def test_flops_per_token_by_kind():
    assert flops(10, 100, "generate") == 2_000
    assert flops(10, 100, "full") == 6_000
    assert flops(10, 100, "lora") == 4_000
    with pytest.raises(ValueError, match="unknown work kind"):
        flops(10, 100, "qlora")


def test_gpu_hours_at_a_stated_utilisation():
    one_hour_at_peak = PEAK_TFLOPS["A100-80GB"] * 1e12 * 3600
    assert gpu_hours(one_hour_at_peak, "A100-80GB", 1.0) == pytest.approx(1.0)
    assert gpu_hours(one_hour_at_peak, "A100-80GB", 0.4) == pytest.approx(2.5)
    assert gpu_hours(one_hour_at_peak, "H100-SXM", 1.0) == pytest.approx(312 / 989)
    with pytest.raises(ValueError, match="run.cost.gpu"):
        gpu_hours(1.0, "TPU", 0.4)
    with pytest.raises(ValueError, match="run.cost.mfu"):
        gpu_hours(1.0, "A100-80GB", 0.0)


def test_total_hours_names_the_steps_of_unknown_size():
    works = [
        Work("train", "m", 10**9, 100, 10**6, "full"),
        Work("gen", "m", None, 100, 10**6, "generate"),
        Work("seed", None, None, 5, None, "none"),
    ]
    hours, unknown = total_hours(works, "A100-80GB", 1.0)
    assert hours == pytest.approx(6e15 / (312e12 * 3600))
    assert unknown == ["gen"]


def test_model_params_reads_a_local_folder_without_loading_weights(tmp_path):
    from bft.pipeline.workload import model_params

    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2_135M))
    assert model_params(str(tmp_path)) == 134_515_008
    assert model_params("llama2_70b") == 68_976_648_192
    assert model_params(str(tmp_path / "missing")) is None


def test_paper_dry_run_plan_has_70b_backward_and_curation_7b_final(compose_cfg, tmp_path):
    from bft.pipeline.dryrun import plan_table

    rows = {r["step"]: r["work"] for r in plan_table(compose_cfg("+experiment=backandforth_paper", f"run.artifacts_dir={tmp_path}"))}
    b70, b7 = "meta-llama/Llama-2-70b-hf", "meta-llama/Llama-2-7b-hf"
    assert (rows["backward_model"].model, rows["augment"].model) == (b70, b70)
    assert (rows["seed_model"].model, rows["curate_0"].model) == (b70, b70)
    assert (rows["final_model"].model, rows["eval_outputs"].model) == (b7, b7)
    assert rows["rewrite"].model == "meta-llama/Llama-2-70b-chat-hf"
    assert rows["final_model"].kind == "full" and rows["final_model"].params == 6_738_415_616
    sft = compose_cfg("+experiment=backandforth_paper").sft.final
    assert rows["final_model"].tokens == sft.max_steps * sft.batch_size * sft.max_seq_len
    # 12.8K pairs at BFT's keep rates (75% of Dolma kept, 13.6% score 5) need 125,491 documents; round 1 reads x1.15
    assert rows["augment"].records == 144_315 and rows["rewrite"].records == 14_721  # 144,315 x 0.75 x 0.136
    assert rows["evaluate"].kind == "none"  # an API judge: no accelerator time


def test_dry_run_prints_roles_and_the_cost(compose_cfg, tmp_path, capsys):
    from bft.pipeline.dryrun import print_plan

    print_plan(compose_cfg("+experiment=backandforth_paper", f"run.artifacts_dir={tmp_path}", "run.cost.gpu=H100-SXM"))
    out = " ".join(capsys.readouterr().out.split())
    assert "backward meta-llama/Llama-2-70b-hf, curation meta-llama/Llama-2-70b-hf, final meta-llama/Llama-2-7b-hf" in out
    assert "rewriter meta-llama/Llama-2-70b-chat-hf (tensor parallel" in out
    assert "H100-SXM GPU-hours at 40% MFU" in out
