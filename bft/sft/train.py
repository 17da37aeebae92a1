"""``train_sft``: the one fine-tuning entry point (backward model, seed model M0, Mi and the final model).

Distribution is Lightning's job: ``trainer.strategy`` ("auto", "ddp", "fsdp", "deepspeed_stage_2", ...),
``accelerator``, ``devices`` and ``num_nodes`` go to ``lightning.Trainer`` unchanged; there is no custom
distributed code. Each rank reads its own share of the batches (see :class:`bft.sft.data.SFTBatchSampler`) and
gradient accumulation makes the effective batch ``stage.batch_size`` = micro batch x accumulation x world size.
The model is built in ``SFTModule.configure_model``, inside the strategy's init context. Full fine-tuning under a
sharded strategy (FSDP, DeepSpeed stage 3) exports through a final Lightning checkpoint that rank 0 consolidates
into a ``save_pretrained`` folder (:mod:`bft.sft.export`).

Training runs ``stage.max_steps`` optimizer steps, cycling over the data as many epochs as needed (reshuffled
each epoch). ``out_dir/checkpoints/last.ckpt`` is written every ``trainer.checkpoint_every_n_steps`` steps and at
the end; a later call with the same ``out_dir`` resumes from it (a larger ``max_steps`` continues the run). The
result lands atomically in ``out_dir/model``: the LoRA adapter (load with ``load_model(base, adapter=...)``) or
the full model (``load_model(folder)``), plus the tokenizer and ``train_metrics.json``.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from bft.artifacts.store import atomic_folder
from bft.config.schema import PeftConfig, SFTStageConfig, TrainerConfig
from bft.config.validate import ConfigError
from bft.logger.console import route_lightning_loggers
from bft.models.registry import cpu_has_bf16, load_tokenizer, pick_dtype
from bft.sft.compile import can_compile
from bft.sft.data import build_dataloader, encode_examples
from bft.sft.export import consolidated_state_dict, is_sharded_strategy, save_full_model
from bft.sft.launchers import single_cpu_process
from bft.sft.module import SFTModule
from bft.sft.rendezvous import ensure_rendezvous_port
from bft.sft.result import TrainResult

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
MODEL_DIR = "model"
FINAL_SHARDED = "final-sharded.ckpt"  # the final Lightning checkpoint of a sharded run, consolidated for export


def resolve_precision(precision: str, accelerator: str) -> str:
    """``bf16-mixed`` on a CPU without bfloat16 units would emulate it slowly: fall back to float32 there."""
    cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if cpu and precision.startswith("bf16") and not cpu_has_bf16():
        warnings.warn(f"precision {precision!r} on a CPU without bfloat16 support: training in float32", stacklevel=2)
        return "32-true"
    return precision


def frozen_base_dtype(model_dtype: str, precision: str, peft: PeftConfig, strategy: str = "auto") -> torch.dtype:
    """Storage dtype of LoRA's frozen base weights; full fine-tuning always keeps float32 master weights.

    ``auto`` stores the frozen base in bfloat16 when the step computes in bfloat16 anyway (``bf16-*``); an
    explicit dtype is taken as given. Under FSDP the base stays float32 like the adapters: FSDP flattens a
    layer's parameters into one tensor of one dtype, and its mixed precision (:func:`fsdp_strategy`) casts them.
    """
    if peft.method != "lora" or is_fsdp(strategy):
        return torch.float32
    if model_dtype == "auto":
        return torch.bfloat16 if precision.startswith("bf16") else torch.float32
    return pick_dtype(model_dtype)


def planned_tokens(encoded: list, stage: SFTStageConfig) -> int:
    """Tokens the run will train on: mean example length x examples per step x steps (padding not counted)."""
    mean_length = sum(len(e) for e in encoded) / len(encoded)
    return int(mean_length * stage.batch_size * stage.max_steps)


def compile_decision(trainer: TrainerConfig, tokens: int) -> tuple[bool, str]:
    """Whether to compile this run, and why (logged)."""
    if not trainer.compile:
        return False, "trainer.compile=false"
    if tokens < trainer.compile_min_tokens:
        return False, f"{tokens} planned tokens < trainer.compile_min_tokens={trainer.compile_min_tokens}"
    reason = can_compile(trainer.accelerator)
    if reason:
        warnings.warn(f"trainer.compile=true ignored, training eagerly: {reason}", stacklevel=3)
        return False, reason
    return True, f"{tokens} planned tokens >= trainer.compile_min_tokens={trainer.compile_min_tokens}"


def is_fsdp(strategy: str) -> bool:
    return str(strategy).startswith("fsdp")


def fsdp_strategy(strategy: str, precision: str, base_path: str):
    """Lightning's ``FSDPStrategy`` for ``trainer.strategy=fsdp`` / ``fsdp_cpu_offload``, with two settings the
    strategy name alone does not give:

    - ``auto_wrap_policy``: one FSDP unit per decoder layer (the model's ``_no_split_modules``), so each rank holds
      one layer unsharded at a time; by name alone Lightning wraps the whole model as one unit, which gathers every
      weight on every rank.
    - ``mixed_precision`` for ``bf16-mixed`` / ``16-mixed``: float32 parameters, gradients and reductions, with
      the step computing under autocast, as on one device. Lightning maps ``bf16-mixed`` to FSDP's
      ``MixedPrecision(param_dtype=bfloat16)``: the unsharded parameters and their gradients are then bf16 views
      of float32 flat parameters, and with gradient accumulation outside ``no_sync`` (Lightning never calls it for
      FSDP) FSDP1 hands those bf16 gradients to the float32 original parameters (``use_orig_params``'s grad views,
      ``_flat_param.py``), which torch >= 2.9 refuses: "attempting to assign a gradient with dtype BFloat16 to a
      tensor with grad_dtype Float". All-float32 FSDP state has no low-precision gradient to hand over; the cost is
      float32 all-gathers and reductions (twice bf16's bytes). ``*-true`` precisions keep Lightning's mapping.
    """
    from lightning.pytorch.strategies import FSDPStrategy

    kwargs: dict = {"auto_wrap_policy": decoder_layer_classes(base_path) or None}
    if strategy == "fsdp_cpu_offload":
        kwargs["cpu_offload"] = True
    if precision.endswith("-mixed"):
        from torch.distributed.fsdp import MixedPrecision

        kwargs["mixed_precision"] = MixedPrecision(param_dtype=torch.float32, reduce_dtype=torch.float32, buffer_dtype=torch.float32)
    return FSDPStrategy(**kwargs)


def decoder_layer_classes(base_path: str) -> set[type]:
    """The classes transformers keeps whole when splitting ``base_path``'s model (``_no_split_modules``)."""
    import importlib

    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_path)
    model_class = AutoModelForCausalLM._model_mapping.get(type(config), None)
    if model_class is None:
        return set()
    module = importlib.import_module(model_class.__module__)
    names = getattr(model_class, "_no_split_modules", None) or []
    return {getattr(module, name) for name in names if hasattr(module, name)}


def trainer_strategy(trainer: TrainerConfig, precision: str, base_path: str):
    """What goes to ``lightning.Trainer(strategy=...)``: the name, or the configured FSDP strategy."""
    return fsdp_strategy(trainer.strategy, precision, base_path) if is_fsdp(trainer.strategy) else trainer.strategy


def clipping(strategy: str, clip: float | None) -> tuple[float | None, float | None]:
    """(``gradient_clip_val`` for the Trainer, norm the module clips itself) for ``trainer.strategy``.

    Lightning's FSDP precision refuses norm clipping (``torch.nn.utils.clip_grad_norm_`` is wrong on shards); FSDP
    clips with the root module's own ``clip_grad_norm_`` (:meth:`SFTModule.configure_gradient_clipping`). DeepSpeed
    takes the Trainer's value into its config (``gradient_clipping``); DDP and single devices clip through Lightning.
    """
    if not clip:
        return None, None
    if is_fsdp(strategy):
        return None, float(clip)
    return float(clip), None


def batch_split(batch_size: int, micro_batch_size: int, world: int) -> tuple[int, int]:
    """(micro-batch size, accumulation) giving ``batch_size`` examples per optimizer step over ``world`` processes.

    ``micro_batch_size`` is a memory bound: where ``batch_size / world`` is not a multiple of it, the largest micro
    size below it that divides is used, so the effective batch (what the learning rate was tuned for) stays the same
    on any number of processes; only a ``batch_size`` that ``world`` does not divide changes it.
    """
    per_rank = batch_size // world
    if per_rank < 1 or batch_size % world:
        micro = min(micro_batch_size, max(1, per_rank))
        return micro, max(1, batch_size // (micro * world))
    micro = next(m for m in range(min(micro_batch_size, per_rank), 0, -1) if per_rank % m == 0)
    return micro, per_rank // micro


def checkpoint_step(path: Path) -> int:
    """The optimizer step a checkpoint was saved at (0 when there is none)."""
    if not path.exists():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def _save_atomically(module: SFTModule, tokenizer, dest: Path, metrics: dict) -> None:
    with atomic_folder(dest) as tmp:
        module.save_model(tmp, tokenizer)
        (tmp / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def _export_sharded(pl_trainer: L.Trainer, module: SFTModule, tokenizer, out_dir: Path, dest: Path, record: dict) -> None:
    """Full fine-tuning under FSDP / ZeRO-3: every rank writes its part of a Lightning checkpoint, then rank 0
    consolidates it (:mod:`bft.sft.export`) into a ``save_pretrained`` folder."""
    final = out_dir / CHECKPOINT_DIR / FINAL_SHARDED
    pl_trainer.save_checkpoint(final)
    pl_trainer.strategy.barrier()
    if pl_trainer.is_global_zero:
        with atomic_folder(dest) as tmp:
            save_full_model(consolidated_state_dict(final), module.base_path, tmp, tokenizer, module.original_dropout)
            (tmp / "train_metrics.json").write_text(json.dumps(record, indent=2) + "\n")


def train_sft(
    examples: list[dict],
    base_model: str,
    out_dir: Path,
    stage: SFTStageConfig,
    peft: PeftConfig,
    trainer: TrainerConfig,
    *,
    seed: int,
    logger=None,
    model_dtype: str = "auto",
    chat_template: str | None = None,
) -> TrainResult:
    """Fine-tune ``base_model`` on ``{"prompt", "completion"}`` examples; see the module docstring.

    ``chat_template`` formats the examples (a ``model.chat_template`` setting); ``None`` = the one registered for
    ``base_model`` by the pipeline, else the model's own. The saved tokenizer carries it.
    """
    route_lightning_loggers()  # this module imported Lightning: its loggers through the console's handler
    out_dir = Path(out_dir)
    if not examples:
        raise ValueError(f"no training examples for {out_dir} (base model {base_model!r}): nothing to fine-tune on")
    if stage.max_steps <= 0:
        raise ValueError(f"stage.max_steps must be positive, got {stage.max_steps}")
    L.seed_everything(seed, verbose=False)
    tokenizer = load_tokenizer(base_model, chat_template)
    encoded, stats = encode_examples(tokenizer, examples, stage.max_seq_len)
    if not encoded:
        raise ValueError(f"no training examples for {out_dir}: all {stats.n_input} prompts reach max_seq_len={stage.max_seq_len}")
    if stats.n_dropped_long_prompt:
        warnings.warn(
            f"dropped {stats.n_dropped_long_prompt}/{stats.n_input} examples whose prompt reaches max_seq_len={stage.max_seq_len}",
            stacklevel=2,
        )
    precision = resolve_precision(trainer.precision, trainer.accelerator)
    compiled, compile_why = compile_decision(trainer, planned_tokens(encoded, stage))
    log.info("training %s: %s", "compiled" if compiled else "eagerly", compile_why)
    module = SFTModule(
        base_model,
        stage,
        peft,
        frozen_dtype=frozen_base_dtype(model_dtype, precision, peft, trainer.strategy),
        mixed_precision=precision.endswith("-mixed"),
        attention=trainer.attention,
        compile=compiled,
    )
    trainer_clip, module.clip_norm = clipping(trainer.strategy, trainer.gradient_clip_val)

    from bft.logger.progress import training_bars

    ckpt_dir = out_dir / CHECKPOINT_DIR
    every = trainer.checkpoint_every_n_steps
    callbacks = []
    if every and every > 0:
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                every_n_train_steps=every,
                save_top_k=0,
                save_last=True,
                enable_version_counter=False,
            )
        )
    if not single_cpu_process(trainer):
        ensure_rendezvous_port()  # bft.sft.rendezvous: a port no outgoing connection can take
    pl_trainer = L.Trainer(
        max_steps=stage.max_steps,
        max_epochs=-1,
        accelerator=trainer.accelerator,
        devices=trainer.devices,
        num_nodes=trainer.num_nodes,
        strategy=trainer_strategy(trainer, precision, module.base_path),
        precision=precision,
        gradient_clip_val=trainer_clip,
        log_every_n_steps=trainer.log_every_n_steps,
        enable_progress_bar=trainer.enable_progress_bar,
        enable_model_summary=False,
        logger=logger or False,
        enable_checkpointing=bool(callbacks),
        callbacks=[*callbacks, *training_bars(trainer.enable_progress_bar, out_dir.parent.name)],  # bft.logger.progress
        default_root_dir=str(out_dir),
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
    )
    # Set after construction so the world size is Lightning's own count (devices="auto", lists, nodes).
    world = pl_trainer.world_size
    micro, accumulate = batch_split(stage.batch_size, stage.micro_batch_size, world)
    if micro != stage.micro_batch_size:
        log.info(
            "micro-batches of %d (not %d) so that %d processes keep batch_size=%d",
            *(micro, stage.micro_batch_size, world, stage.batch_size),
        )
    if accumulate * micro * world != stage.batch_size:
        warnings.warn(
            f"batch_size={stage.batch_size} is not a multiple of world size {world}: using micro-batches of {micro} "
            f"and accumulation {accumulate} (effective batch {accumulate * micro * world})",
            stacklevel=2,
        )
    pl_trainer.accumulate_grad_batches = accumulate
    module.rng_seed = seed

    last = ckpt_dir / LAST_CHECKPOINT
    done_steps = checkpoint_step(last)
    loader = build_dataloader(
        encoded,
        stage.grouping,
        micro,
        stage.max_seq_len,
        tokenizer.pad_token_id,
        seed,
        start=done_steps * accumulate,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        try:
            pl_trainer.fit(module, train_dataloaders=loader, ckpt_path=str(last) if last.exists() else None)
        except torch._dynamo.exc.BackendCompilerFailed as err:  # e.g. a broken C++ toolchain on this machine
            inner = err.inner_exception
            first_line = (str(inner).strip().splitlines() or [""])[0][:200]
            raise ConfigError(
                f"trainer.compile: torch.compile failed while training {out_dir} "
                f"({type(inner).__name__}: {first_line}); set trainer.compile=false to train eagerly "
                "(finished checkpoints are kept and resumed)"
            ) from err
    if callbacks and pl_trainer.global_step % every != 0:
        pl_trainer.save_checkpoint(last)  # so that a longer run resumes from the final step

    seconds = module.fit_seconds or (time.perf_counter() - start)
    metrics: dict[str, float] = {
        "train_loss": module.smoothed_loss(),
        "first_loss": module.first_loss if module.first_loss is not None else float("nan"),
        "steps": float(pl_trainer.global_step),
        "resumed_from_step": float(module.start_step),
        "tokens": float(module.fit_tokens),
        "seconds": seconds,
        "tokens_per_s": module.fit_tokens / seconds if seconds > 0 else 0.0,
        "steady_tokens_per_s": module.steady_tokens / module.steady_seconds if module.steady_seconds > 0 else 0.0,
        "compiled_layers": float(module.compiled_layers),
        "n_examples": float(stats.n_kept),
        "n_dropped_long_prompt": float(stats.n_dropped_long_prompt),
        "n_truncated": float(stats.n_truncated),
        "trainable_params": float(module.trainable_params),
        "accumulate_grad_batches": float(accumulate),
        "world_size": float(world),
    }
    dest = out_dir / MODEL_DIR
    record = {"metrics": metrics, "stage": asdict(stage), "seed": seed}
    if not module.is_adapter and is_sharded_strategy(trainer.strategy):
        _export_sharded(pl_trainer, module, tokenizer, out_dir, dest, record)
    elif pl_trainer.is_global_zero:
        _save_atomically(module, tokenizer, dest, record)
    pl_trainer.strategy.barrier()
    return TrainResult(model_dir=str(dest), is_adapter=module.is_adapter, metrics=metrics, precision=precision)
