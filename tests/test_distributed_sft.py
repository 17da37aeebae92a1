"""Distributed fine-tuning on CPU: a checkpoint sharded by 2 FSDP processes (gloo) consolidates into one
``save_pretrained`` folder. Lightning refuses ``strategy=fsdp`` without a GPU, so the sharded checkpoint is written by
torch's own FSDP (``fully_shard``) in the layout Lightning's sharded FSDP checkpoints use (``{"model": <LightningModule
state dict>}``). 2 DDP processes exporting a full model that loads and generates: the paper experiment through the
CLI in tests/test_multidevice.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bft.models.registry import resolve_model_path
from bft.sft.export import consolidated_state_dict, is_sharded_strategy, save_full_model
from bft.sft.rendezvous import rendezvous_port

pytestmark = pytest.mark.slow  # starts training processes (make test-fast skips it)

REPO = Path(__file__).resolve().parents[1]

FSDP_SCRIPT = """
import os, sys, torch, torch.distributed as dist, torch.multiprocessing as mp

def run(rank, out, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM
    from bft.models.registry import resolve_model_path

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny"), dtype=torch.float32)
    torch.manual_seed(1)
    with torch.no_grad():
        model.model.norm.weight.add_(torch.randn_like(model.model.norm.weight))  # "trained": differs from the base
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    state = get_model_state_dict(model)
    assert all(type(v).__name__ == "DTensor" for v in state.values())  # really sharded across the 2 ranks
    dcp.save({"model": {"model." + k: v for k, v in state.items()}}, checkpoint_id=out)
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(run, args=(sys.argv[1], sys.argv[2]), nprocs=2)
"""


def _run(script: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _generates(folder: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Say red."}], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 4 or out[0, -1].item() in (tokenizer.eos_token_id, tokenizer.pad_token_id)


def _base_weights() -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny"), dtype=torch.float32).state_dict()


@pytest.mark.slow  # two sharding processes: about 45 s on 2 CPU cores
def test_fsdp_sharded_checkpoint_consolidates_to_a_pretrained_folder(tmp_path):
    from transformers import AutoModelForCausalLM

    from bft.models.registry import load_tokenizer

    script = tmp_path / "shard.py"
    script.write_text(FSDP_SCRIPT)
    checkpoint = tmp_path / "final-sharded.ckpt"
    _run(script, str(checkpoint), str(rendezvous_port()))
    assert sorted(p.name for p in checkpoint.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]

    state = consolidated_state_dict(checkpoint)
    folder = tmp_path / "model"
    save_full_model(state, resolve_model_path("tiny"), folder, load_tokenizer("tiny"))
    exported = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    base = _base_weights()
    for name, value in base.items():
        if name == "model.norm.weight":
            assert not torch.equal(exported[name], value)  # the sharded run's change survived consolidation
        else:
            assert torch.equal(exported[name], value), name
    _generates(str(folder))


def test_full_state_dict_file_exports_and_restores_training_config(tmp_path):
    """Lightning's FSDP default (state_dict_type='full') writes one file gathered on rank 0."""
    from transformers import AutoConfig

    from bft.models.registry import load_tokenizer

    base = _base_weights()
    ckpt = tmp_path / "final.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in base.items()}, "global_step": 2}, ckpt)
    save_full_model(
        consolidated_state_dict(ckpt), resolve_model_path("tiny"), tmp_path / "m", load_tokenizer("tiny"), {"attention_dropout": 0.0}
    )
    assert AutoConfig.from_pretrained(tmp_path / "m").use_cache is True
    with pytest.raises(ValueError, match="does not match"):
        broken = {f"model.{k}": v for k, v in base.items() if "layers.1." not in k}
        save_full_model(broken, resolve_model_path("tiny"), tmp_path / "bad", load_tokenizer("tiny"))


@pytest.mark.parametrize(
    ("strategy", "sharded"),
    [
        ("fsdp", True),
        ("fsdp_cpu_offload", True),
        ("deepspeed_stage_3", True),
        ("deepspeed_stage_3_offload", True),
        ("deepspeed_stage_2", False),
        ("ddp", False),
        ("auto", False),
    ],
)
def test_sharded_strategies_are_recognised(strategy, sharded):
    assert is_sharded_strategy(strategy) is sharded
