"""Training on several devices: the process model (bft.sft.launch), the rank guard of the CLI, the Trainer settings
per strategy, and the real CLI on 2 CPU processes (DDP over gloo).

Lightning refuses ``fsdp`` and ``deepspeed`` without a GPU, so the FSDP settings are checked against Lightning's own
FSDP precision plugin and strategy objects, without running them; the end-to-end runs use ``ddp``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bft.config.schema import PeftConfig, SFTStageConfig, TrainerConfig

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ batches and seeds


def _stream(monkeypatch, rank: int, world: int, n: int, start: int = 0) -> list[list[int]]:
    import itertools

    import bft.sft.data as data

    monkeypatch.setattr(data, "_rank_and_world", lambda: (rank, world))
    sampler = data.SFTBatchSampler([5, 9, 3, 7, 2, 8, 6, 4, 1, 10, 11], batch_size=2, seed=3, group_by_length=True, start=start)
    return list(itertools.islice(iter(sampler), n))


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_interleave_to_the_one_device_stream(monkeypatch, world):
    """Rank r takes micro-batches r, r + W, ... of the one-device stream across epochs (6 per epoch here, so 3
    ranks do not divide it): step k trains on the same micro-batches on W ranks as on one device, resumed or not."""
    single = _stream(monkeypatch, 0, 1, 40)
    ranks = [_stream(monkeypatch, r, world, 40 // world) for r in range(world)]
    assert [ranks[i % world][i // world] for i in range(40 // world * world)] == single[: 40 // world * world]
    resumed = [_stream(monkeypatch, r, world, 3, start=5) for r in range(world)]
    assert [resumed[i % world][i // world] for i in range(3 * world)] == single[5 * world : 8 * world]


def test_dropout_seeds_follow_the_global_micro_batch(monkeypatch):
    from bft.sft.module import SFTModule

    seeds = []
    module = _module()
    monkeypatch.setattr(torch, "manual_seed", seeds.append)
    for world in (1, 2):
        for rank in range(world):
            module._trainer = SimpleNamespace(accumulate_grad_batches=4 // world, global_step=1, world_size=world, global_rank=rank)
            for batch_idx in range(4 // world):
                SFTModule.on_train_batch_start(module, {}, batch_idx)
    one, two = seeds[:4], seeds[4:]
    assert sorted(one) == sorted(two) and two == [one[0], one[2], one[1], one[3]]


@pytest.mark.parametrize(
    ("batch", "micro", "world", "expected"),
    [(4, 4, 1, (4, 1)), (4, 4, 2, (2, 1)), (64, 4, 8, (4, 2)), (12, 4, 2, (3, 2)), (6, 4, 4, (1, 1)), (4, 2, 8, (1, 1))],
)
def test_the_effective_batch_stays_batch_size_on_any_number_of_processes(batch, micro, world, expected):
    from bft.sft.train import batch_split

    assert batch_split(batch, micro, world) == expected
    m, accumulate = expected
    assert m <= micro and (m * accumulate * world == batch or batch % world)


# ------------------------------------------------------------------------------------------ the module on a device


def _module(**kwargs):
    from bft.sft.module import SFTModule

    return SFTModule("tiny", SFTStageConfig(max_steps=1), PeftConfig(method="full"), **kwargs)


def test_tensors_reduced_at_the_end_live_on_the_module_device():
    """NCCL reduces CUDA tensors only: on_train_end must build its counts on the module's device (here meta)."""
    received = []

    def reduce(tensor, reduce_op):
        received.append(tensor)
        return torch.tensor([12.0, 8.0])

    module = _module()
    module._device = torch.device("meta")
    module._trainer = SimpleNamespace(strategy=SimpleNamespace(reduce=reduce))
    module.tokens_seen = 6
    module.on_train_end()
    assert received[0].device == torch.device("meta") and (module.fit_tokens, module.steady_tokens) == (12, 8)


@pytest.mark.slow  # builds the tiny model
def test_weight_decay_groups_survive_sharded_flat_views():
    """FSDP (use_orig_params) and ZeRO-3 flatten parameters before configure_optimizers: the matrices must keep
    their weight decay and norms / biases stay without it, as on one device."""
    module = _module()
    module.configure_model()
    matrices = {id(p) for p in module.model.parameters() if p.ndim >= 2}
    with torch.no_grad():
        for param in module.model.parameters():
            param.data = param.data.flatten()  # what FSDP's sharded views look like
    decay, no_decay = module.configure_optimizers()["optimizer"].param_groups
    assert {id(p) for p in decay["params"]} == matrices and decay["weight_decay"] == module.stage.weight_decay
    assert no_decay["params"] and not {id(p) for p in no_decay["params"]} & matrices and no_decay["weight_decay"] == 0.0


# ------------------------------------------------------------------------------------------ clipping per strategy


class _Root(torch.nn.Module):
    """Stands for the root FullyShardedDataParallel module: records clip_grad_norm_ calls (test-only)."""

    def __init__(self):
        super().__init__()
        self.clipped = []

    def clip_grad_norm_(self, max_norm):
        self.clipped.append(max_norm)


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true", "16-mixed", "32-true"])
@pytest.mark.parametrize("strategy", ["fsdp", "fsdp_cpu_offload", "ddp", "deepspeed_stage_3", "auto"])
def test_gradient_clipping_runs_through_each_strategys_precision_plugin(strategy, precision):
    """The Trainer kwargs of each strategy x precision, run through Lightning's own precision plugin for it: FSDP's
    refuses norm clipping (the H200 failure), so FSDP clips with the root module's clip_grad_norm_."""
    from lightning.pytorch.plugins.precision import FSDPPrecision, Precision
    from lightning.pytorch.profilers import PassThroughProfiler

    from bft.sft.train import clipping

    trainer_clip, module_clip = clipping(strategy, 1.0)
    if strategy.startswith("fsdp"):
        assert (trainer_clip, module_clip) == (None, 1.0)
        plugin = FSDPPrecision(precision)
        with pytest.raises(Exception, match="not supported for `FSDPPrecision`"):
            plugin.clip_grad_by_norm(None, 1.0)  # why bft never hands FSDP the Trainer's gradient_clip_val
    else:
        assert (trainer_clip, module_clip) == (1.0, None)  # DDP: Lightning clips; DeepSpeed: its "gradient_clipping"
        plugin = Precision()
    module = _module()
    module.clip_norm = module_clip
    root = _Root()
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.full((3,), 10.0)
    optimizer = torch.optim.SGD([param], lr=0.1)
    algorithm = "norm" if trainer_clip else None  # what lightning.Trainer(gradient_clip_val=trainer_clip) holds
    module._trainer = SimpleNamespace(
        strategy=SimpleNamespace(model=root),
        gradient_clip_val=trainer_clip,
        gradient_clip_algorithm=algorithm,
        precision_plugin=plugin,
        lightning_module=module,
        profiler=PassThroughProfiler(),
    )
    plugin._clip_gradients(module, optimizer, trainer_clip, algorithm)  # what Lightning runs after each backward
    if strategy.startswith("fsdp"):
        assert root.clipped == [1.0]
    else:
        assert root.clipped == [] and torch.linalg.vector_norm(param.grad).item() == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "bf16-true", "32-true"])
def test_fsdp_strategy_wraps_decoder_layers_and_keeps_float32_state_under_mixed_precision(precision):
    """bf16-mixed under FSDP: float32 parameters, gradients and reductions (autocast computes in bf16), so FSDP1
    never hands a bf16 gradient to a float32 parameter; one FSDP unit per decoder layer."""
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from bft.models.registry import resolve_model_path
    from bft.sft.train import frozen_base_dtype, trainer_strategy

    path = resolve_model_path("tiny")
    strategy = trainer_strategy(TrainerConfig(strategy="fsdp", precision=precision), precision, path)
    assert isinstance(strategy, FSDPStrategy)
    assert LlamaDecoderLayer in strategy.kwargs["auto_wrap_policy"]._module_classes
    if precision.endswith("-mixed"):
        mp = strategy.mixed_precision_config
        assert (mp.param_dtype, mp.reduce_dtype, mp.buffer_dtype) == (torch.float32,) * 3
    else:
        assert strategy.mixed_precision is None  # Lightning's own mapping for *-true
    assert trainer_strategy(TrainerConfig(strategy="ddp"), precision, path) == "ddp"
    lora = PeftConfig(method="lora")
    assert frozen_base_dtype("auto", precision, lora, "fsdp") == torch.float32  # one dtype per FSDP flat parameter
    assert frozen_base_dtype("auto", "bf16-mixed", lora, "ddp") == torch.bfloat16


# ------------------------------------------------------------------------------------------ launcher choice


@pytest.mark.parametrize(
    ("settings", "launcher"),
    [
        ({}, "inprocess"),
        ({"devices": 2}, "local"),
        ({"accelerator": "gpu"}, "local"),  # a GPU training never shares a process with a generation engine
        ({"devices": 2, "launcher": "slurm"}, "slurm"),
        ({"launcher": "local"}, "local"),
    ],
)
def test_a_training_stage_runs_in_process_only_on_one_cpu_device(settings, launcher):
    from bft.sft.launchers import check_launcher, resolve_launcher

    trainer = TrainerConfig(**settings)
    check_launcher(trainer)
    assert resolve_launcher(trainer) == launcher


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"launcher": "inprocess", "devices": 2}, "trainer.launcher=inprocess trains in the pipeline process"),
        ({"num_nodes": 2, "devices": 2}, "trainer.num_nodes=2 needs trainer.launcher=slurm"),
        ({"launcher": "slurm", "devices": -1}, "trainer.launcher=slurm needs trainer.devices"),
        ({"launcher": "mpi"}, "trainer.launcher='mpi' is not one of"),
    ],
)
def test_a_launcher_that_cannot_run_the_trainer_fails_in_one_line(settings, message):
    from bft.config.validate import ConfigError
    from bft.sft.launchers import check_launcher

    with pytest.raises(ConfigError, match=message):
        check_launcher(TrainerConfig(**settings))


def test_slurm_job_has_one_task_per_device_on_each_node():
    from bft.sft.launchers import slurm_parameters

    trainer = TrainerConfig(accelerator="gpu", devices=8, num_nodes=2, launcher="slurm", slurm={"slurm_partition": "a100"})
    assert slurm_parameters(trainer, "final_model") == {
        "name": "bft-final_model",
        "nodes": 2,
        "tasks_per_node": 8,
        "gpus_per_node": 8,
        "slurm_partition": "a100",
    }


def test_the_job_does_not_inherit_the_pipelines_rank():
    from bft.sft.launch import job_environment

    env = job_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "RANK": "0", "WORLD_SIZE": "8", "PATH": "/bin"})
    assert env == {"PATH": "/bin"}


# The job's side replaced by what it leaves when it succeeded (rank 0's result.json); the real one runs in the launched
# tests below. What stays is the pipeline side of bft.pipeline.stages.training._launch: write the job, wait, read.
_PIPELINE_SIDE = """
import json, sys
import bft.pipeline.stages.training
import bft.sft.launch as launch

def finished_job(path, job):
    (job.folder / "result.json").write_text(json.dumps({"model_dir": "m", "is_adapter": True}))
    return 0

launch.run_local = finished_job
job = launch.TrainJob("examples.jsonl", "tiny", sys.argv[1], {}, {}, {"accelerator": "cpu", "devices": 2}, seed=0)
assert launch.launch_training(job, "final_model").is_adapter
print(sorted({"lightning", "torchmetrics", "torch", "transformers", "datasets"} & set(sys.modules)))
"""


@pytest.mark.slow  # starts a process
def test_the_pipeline_side_of_a_launched_training_imports_no_training_library(tmp_path):
    """Writing the job, waiting for it and reading rank 0's result import no training library: Lightning (with
    torchmetrics, seconds) is the job's import, which the pipeline process would otherwise pay once more per run."""
    done = subprocess.run(
        [sys.executable, "-c", _PIPELINE_SIDE, str(tmp_path)], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.parametrize(
    ("environ", "exits"),
    [
        ({}, False),
        ({"RANK": "0", "WORLD_SIZE": "8"}, False),
        ({"RANK": "3", "WORLD_SIZE": "8"}, True),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}, False),
        ({"SLURM_PROCID": "7", "SLURM_NTASKS": "8"}, True),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, False),
    ],
)
def test_only_rank_0_of_a_multi_rank_start_drives_the_pipeline(environ, exits):
    from bft.cli.ranks import secondary_rank_notice

    notice = secondary_rank_notice(environ)
    assert (notice is not None) == exits
    if exits:
        assert "\n" not in notice and "rank 0" in notice


def test_rank_0_of_a_multi_rank_start_runs_as_one_process():
    from bft.cli.ranks import detach_from_launcher

    environ = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "7", "PATH": "/bin"}
    assert detach_from_launcher(environ) == (0, 8, "srun") and environ == {"PATH": "/bin"}
    single = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "PATH": "/bin"}
    assert detach_from_launcher(single) is None and len(single) == 3  # a one-task job keeps its variables


# ------------------------------------------------------------------------------------------ real processes


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


@pytest.mark.slow  # starts one bft process per rank
def test_other_ranks_of_an_srun_start_exit_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bft.cli", "debug=smoke", f"run.artifacts_dir={tmp_path}"],
        env=_env(SLURM_PROCID="1", SLURM_NTASKS="2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("bft: rank 1 of 2 (srun)") and not any(tmp_path.iterdir())


def _job(tmp_path: Path, **trainer) -> tuple:
    from bft.data.io import write_jsonl_atomic
    from bft.sft.launch import TrainJob

    out = tmp_path / "final_model" / "key.partial"
    examples = out / "launch" / "examples.jsonl"
    words = ("red", "green", "blue", "cyan", "pink", "gold", "teal", "gray")
    write_jsonl_atomic(examples, [{"prompt": f"Say {w}.", "completion": f"{w} {w}."} for w in words])
    stage = SFTStageConfig(max_steps=2, batch_size=4, micro_batch_size=1, max_seq_len=64, lr=1e-3, dropout=0.1)
    settings = {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "precision": "32-true", "enable_progress_bar": False}
    settings.update(checkpoint_every_n_steps=1, attention="bft_causal_blocks", **trainer)
    job = TrainJob(str(examples), "tiny", str(out), vars(stage), vars(PeftConfig(method="lora")), settings, seed=0)
    return job, out


@pytest.mark.slow  # two launched 2-process DDP jobs (gloo), one failing launch, one training in this process
def test_a_launched_job_trains_as_one_process_resumes_and_fails_in_one_line(tmp_path):
    """2 DDP ranks (accumulation 2) end with the adapter one process (accumulation 4) trains, up to float32
    reduction order: same effective batch, same micro-batches per optimizer step, same dropout masks. The job then
    resumes from its last.ckpt, and a job failing on every rank surfaces as one line, finished work kept."""
    from safetensors.torch import load_file

    from bft.data.io import read_jsonl
    from bft.sft.launch import TrainingJobError, launch_training
    from bft.sft.train import train_sft

    job, out = _job(tmp_path)
    two = launch_training(job, "final_model")
    assert two.metrics["world_size"] == 2 and two.metrics["steps"] == 2
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "model" / "adapter_model.safetensors").is_file()
    one = train_sft(
        read_jsonl(job.examples),
        "tiny",
        tmp_path / "one" / "final_model" / "key.partial",
        SFTStageConfig(**job.stage),
        PeftConfig(**job.peft),
        TrainerConfig(**{**job.trainer, "devices": 1, "strategy": "auto"}),
        seed=0,
    )
    assert (two.metrics["accumulate_grad_batches"], one.metrics["accumulate_grad_batches"]) == (2, 4)
    a, b = (load_file(Path(r.model_dir) / "adapter_model.safetensors") for r in (two, one))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-4) for k in a)
    assert two.metrics["first_loss"] == pytest.approx(one.metrics["first_loss"], rel=1e-5)

    job.stage["max_steps"] = 3
    resumed = launch_training(job, "final_model")
    assert resumed.metrics["resumed_from_step"] == 2 and resumed.metrics["steps"] == 3

    job.peft["method"] = "prefix"  # fails on every rank
    with pytest.raises(TrainingJobError) as failed:
        launch_training(job, "final_model")
    message = str(failed.value)
    assert "\n" not in message and "ValueError: unknown peft.method 'prefix'" in message
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "model").is_dir()  # finished work kept


@pytest.mark.slow  # a paper experiment through the real CLI, each training stage on 2 processes (gloo)
def test_paper_experiment_on_two_cpu_devices_through_the_cli_from_a_clean_store(tmp_path):
    """The reported hang, on the run users came for: ``bft +experiment=backandforth_paper debug=paper_smoke`` (full
    fine-tuning, the papers' prompt format, oasst1 and Dolma in their hub layouts) with every training stage on 2
    DDP processes, each a launched job. The CLI must finish (a hang fails at the timeout), each trained model must
    record 2 processes and the same files as an in-process training, and the final model must load and generate.
    The in-process run of this experiment, with the paper checks, is tests/test_paper_smoke.py's."""
    from helpers.hub_mirrors import write_dolma, write_oasst1

    artifacts = tmp_path / "artifacts"
    url_list, mirror = write_dolma(tmp_path / "dolma", shards=2, docs=5)
    args = ["+experiment=backandforth_paper", "debug=paper_smoke", f"seed.mirror={write_oasst1(tmp_path / 'oasst1')}"]
    args += [f"corpus.url_list={url_list}", f"corpus.mirror={mirror}", "corpus.tokenizer=tiny"]
    # what a random model cannot do offline (conf/debug/paper_smoke.yaml): local judge, logprob curation, raw rewrites
    args += ["eval.annotator=local", "curation.scoring=logprob", "curation.threshold=null", "curation.top_fraction=0.5"]
    args += [
        "rewriter.keep_unparsed=true",
        "generation.augment.keep_unfinished=true",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "eval.max_instances=2",
    ]
    args += [f"run.artifacts_dir={artifacts}", f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(
        [sys.executable, "-m", "bft.cli", *args], env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-3000:]
    manifests = {p.parent.parent.name: json.loads(p.read_text()) for p in artifacts.glob("*/*/manifest.json")}
    for stage in ("backward_model", "seed_model", "final_model"):
        assert manifests[stage]["metrics"]["world_size"] == 2, stage
        assert manifests[stage]["is_adapter"] is False, stage  # the experiment's full fine-tuning
        assert not any(name.startswith("launch/") for name in manifests[stage]["files"])  # same files as in-process
    (final,) = artifacts.glob("final_model/*/model")
    from bft.models.registry import load_model

    loaded = load_model(str(final), dtype="float32")
    base = load_model("tiny", dtype="float32").model.state_dict()
    trained = loaded.model.state_dict()
    assert trained.keys() == base.keys() and any(not torch.equal(trained[k], base[k]) for k in base)  # trained in full
    ids = loaded.tokenizer("Say red.", return_tensors="pt").input_ids
    out = loaded.model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id)
    assert out.shape[1] > ids.shape[1]
