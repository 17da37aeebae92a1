"""The LightningModule of every fine-tuning run: a causal LM, LoRA (PEFT) or full fine-tuning, loss on completions.

Choices:
- Weights load in float32 (master weights); speed comes from the Trainer's ``bf16-mixed`` autocast. With LoRA the
  frozen base may be stored in bfloat16 instead (``frozen_dtype``): it is never updated, and autocast computes in
  bfloat16 anyway, so this only skips re-casting every weight at every step. Under autocast
  (``mixed_precision``) LoRA inputs are no longer cast to float32 first (:func:`skip_adapter_input_casts`).
- Dropout: ``stage.dropout`` is *residual* dropout, as in metaseq (the papers' LLaMA fine-tuning code): applied to
  the output of every decoder layer's attention block and MLP block before the residual addition, through forward
  hooks that act only in training mode (:func:`add_residual_dropout`). Attention-probability dropout
  (``config.attention_dropout``) is left at the model's value: on CPU it forces PyTorch's unfused attention
  kernel (about 3x slower attention, measured), and metaseq's ``dropout`` is not that one. A model without
  recognisable decoder layers (``self_attn`` + ``mlp``) gets ``stage.dropout`` in its config dropout fields
  (:data:`DROPOUT_FIELDS`) instead, restored before saving. LoRA adds its own ``peft.dropout`` on the adapter input.
  Both use :func:`bft.sft.dropout.fast_dropout` (same semantics, ~2x cheaper random masks on CPU).
- AdamW with weight decay on matrices only (no decay on biases and norm weights), linear warmup over
  ``warmup_ratio * max_steps`` optimizer steps, then cosine/linear decay to ``lr * lr_floor_ratio``
  (:func:`bft.sft.schedule.lr_lambda`).
- The loss: for Llama-like models (:data:`FAST_LOSS_MODEL_TYPES`, no logit scaling or soft-capping) the output
  layer is applied only at positions whose next token is a completion token, which skips the vocabulary
  projection for prompt and padding positions; other models use the model's own ``labels=`` loss. Both are the
  mean token cross-entropy over completion tokens of the micro-batch.
- The model is built in :meth:`SFTModule.configure_model`, which Lightning calls inside the strategy's init context
  (FSDP wrapping, DeepSpeed ZeRO-3 ``zero.Init``), not in ``__init__``; sharded full fine-tuning exports through
  :mod:`bft.sft.export`.
- ``compile=True`` (``trainer.compile``) compiles each decoder layer and the output head + loss
  (:mod:`bft.sft.compile`); the state dict, checkpoints and saved adapters are the same as eager's.
- Throughput: ``fit_seconds``/``fit_tokens`` cover the whole fit (compilation and the first step included);
  ``steady_seconds``/``steady_tokens`` start after the first optimizer step, the steady-state rate that
  ``bft-bench`` compares with its plain loop (whose first step is untimed as well).
"""

from __future__ import annotations

import time
from functools import partial

import lightning as L
import torch

from bft.config.schema import PeftConfig, SFTStageConfig
from bft.models.registry import resolve_model_path
from bft.sft import attention as _training_attention  # noqa: F401 - registers trainer.attention: bft_causal_blocks
from bft.sft.compile import compile_decoder_layers, compiled_head_loss, head_loss
from bft.sft.data import IGNORE_INDEX
from bft.sft.dropout import fast_dropout, replace_dropout_modules
from bft.sft.schedule import lr_lambda, warmup_steps_for

__all__ = ["SFTModule", "lr_lambda", "add_residual_dropout", "apply_dropout", "skip_adapter_input_casts", "DROPOUT_FIELDS"]

DROPOUT_FIELDS = ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop")
FAST_LOSS_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "smollm3"})
EMA_BETA = 0.9


def add_residual_dropout(model: torch.nn.Module, p: float) -> int:
    """Hook dropout onto the attention and MLP outputs of every decoder layer; return how many layers got it."""
    if p <= 0:
        return 0

    def tensor_hook(module, args, output):
        return fast_dropout(output, p, module.training)

    def tuple_hook(module, args, output):
        if isinstance(output, tuple):
            return (fast_dropout(output[0], p, module.training), *output[1:])
        return fast_dropout(output, p, module.training)

    layers = [m for m in model.modules() if hasattr(m, "self_attn") and hasattr(m, "mlp")]
    for layer in layers:
        layer.self_attn.register_forward_hook(tuple_hook)
        layer.mlp.register_forward_hook(tensor_hook)
    return len(layers)


def apply_dropout(config, dropout: float) -> dict[str, float]:
    """Set ``dropout`` on every field of :data:`DROPOUT_FIELDS` the config has; return the original values."""
    original = {}
    for name in DROPOUT_FIELDS:
        if isinstance(getattr(config, name, None), int | float):
            original[name] = getattr(config, name)
            setattr(config, name, dropout)
    return original


def skip_adapter_input_casts(model: torch.nn.Module) -> int:
    """Stop PEFT casting each LoRA layer's input to the adapter's float32 before autocast casts it back to bf16.

    Only valid under autocast (the adapter matmuls then run in the autocast dtype and the float32 adapter weights
    still get float32 gradients). Measured on SmolLM2-135M, LoRA on all linear layers, 2x512 tokens: 12-18% more
    tokens/s in a bare forward/backward/AdamW step; inside the Lightning loop the gain is within run-to-run noise.
    Returns how many layers were changed.
    """
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    return len(layers)


def _lora_targets(target_modules: list[str]) -> str | list[str]:
    targets = list(target_modules)
    return "all-linear" if targets == ["all-linear"] else targets


class SFTModule(L.LightningModule):
    """Fine-tunes ``base_model`` (a registry name, folder or hub id) with LoRA or fully."""

    def __init__(
        self,
        base_model: str,
        stage: SFTStageConfig,
        peft: PeftConfig,
        *,
        frozen_dtype: torch.dtype = torch.float32,
        mixed_precision: bool = False,
        attention: str | None = None,
        compile: bool = False,
    ):
        super().__init__()
        from transformers import AutoConfig

        if peft.method not in ("lora", "full"):
            raise ValueError(f"unknown peft.method {peft.method!r}; expected 'lora' or 'full'")
        self.stage = stage
        self.peft = peft
        self.is_adapter = peft.method == "lora"
        self.base_path = resolve_model_path(base_model)
        self._frozen_dtype = frozen_dtype
        self._mixed_precision = mixed_precision
        self._attention = attention
        self._compile = compile
        self.fast_loss = getattr(AutoConfig.from_pretrained(self.base_path), "model_type", "") in FAST_LOSS_MODEL_TYPES
        self.model: torch.nn.Module | None = None  # built by configure_model, inside the strategy's context
        self.original_dropout: dict[str, float] = {}
        self.residual_dropout_layers = 0
        self.compiled_layers = 0
        self.trainable_names: set[str] = set()
        self.trainable_params = 0
        # A LoRA checkpoint keeps only the trainable tensors; the frozen base is reloaded from base_model.
        self.strict_loading = not self.is_adapter
        self.tokens_seen = 0
        self.first_loss: float | None = None
        self._ema: torch.Tensor | None = None
        self._ema_count = 0
        self._t0: float | None = None
        self.start_step = 0
        self.rng_seed = 0
        self._tokens_at_start = 0
        self.fit_seconds = 0.0
        self.fit_tokens = 0
        self._steady_start: tuple[float, int] | None = None
        self.steady_seconds = 0.0
        self.steady_tokens = 0
        self._no_decay: set[int] = set()  # ids of the parameters without weight decay (configure_model)
        self.clip_norm: float | None = None  # FSDP: clipped here with the root module's clip_grad_norm_ (train.clipping)

    def configure_model(self) -> None:
        """Build the model. Lightning calls this inside the strategy's init context (device, precision, FSDP
        wrapping, DeepSpeed ZeRO-3 partitioning), so a sharded strategy shards it as it is set up instead of every
        rank first holding a full accelerator replica; it runs once (Lightning also calls it on resume)."""
        if self.model is not None:
            return
        from transformers import AutoConfig, AutoModelForCausalLM

        stage, peft, path = self.stage, self.peft, self.base_path
        strategy = getattr(self._trainer, "strategy", None)
        if getattr(strategy, "zero_stage_3", False):
            # Lightning wraps this hook in deepspeed.zero.Init; transformers' documented non-Trainer integration
            # (HfDeepSpeedConfig, kept alive while loading) makes from_pretrained fill the partitioned parameters.
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_deepspeed = HfDeepSpeedConfig(strategy.config)
        config = AutoConfig.from_pretrained(path)
        config.use_cache = False
        load = {"attn_implementation": self._attention} if self._attention else {}
        model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch.float32, **load)
        self.residual_dropout_layers = add_residual_dropout(model, stage.dropout)
        if stage.dropout > 0 and not self.residual_dropout_layers:
            self.original_dropout = apply_dropout(config, stage.dropout)
            model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch.float32, **load)
        if self.is_adapter:
            from peft import LoraConfig, get_peft_model

            if self._frozen_dtype != torch.float32:
                model.to(self._frozen_dtype)
            lora = LoraConfig(
                r=peft.r,
                lora_alpha=peft.alpha,
                lora_dropout=peft.dropout,
                target_modules=_lora_targets(peft.target_modules),
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)  # adapter weights stay float32 (autocast_adapter_dtype)
            replace_dropout_modules(model)  # LoRA's nn.Dropout -> FastDropout (same p)
            if self._mixed_precision:
                skip_adapter_input_casts(model)
        model.train()  # from_pretrained returns eval mode, and Lightning keeps submodule modes: enable dropout
        self.model = model
        if self._compile and self.is_adapter:  # layer 0's input then needs grad like the others': one graph for all
            model.enable_input_require_grads()
        self.compiled_layers = compile_decoder_layers(self._causal_lm()) if self._compile else 0
        self.trainable_names = {f"model.{n}" for n, p in model.named_parameters() if p.requires_grad}
        self.trainable_params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
        # Weight decay on matrices only, decided here on the parameters' real shapes: by configure_optimizers a
        # sharded strategy has replaced them by flat 1-D views (FSDP with use_orig_params keeps the Parameter
        # objects but flattens their data; DeepSpeed ZeRO-3 leaves an empty tensor and keeps the shape in ds_shape).
        self._no_decay = {id(p) for p in model.parameters() if len(getattr(p, "ds_shape", p.shape)) < 2}

    # --- loss -------------------------------------------------------------------------------------------------
    def _causal_lm(self):
        return self.model.get_base_model() if self.is_adapter else self.model

    def compute_loss(self, batch: dict) -> torch.Tensor:
        """Mean cross-entropy over completion tokens (labels != -100) of one micro-batch."""
        labels = batch["labels"]
        position_ids = batch.get("position_ids")
        if not self.fast_loss:
            out = self.model(input_ids=batch["input_ids"], position_ids=position_ids, labels=labels, use_cache=False)
            return out.loss
        lm = self._causal_lm()
        hidden = lm.model(input_ids=batch["input_ids"], position_ids=position_ids, use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        loss_fn = compiled_head_loss if self.compiled_layers else head_loss
        return loss_fn(hidden[:, :-1][keep], lm.lm_head.weight, targets[keep])

    # --- Lightning hooks --------------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        """Seed dropout from (seed, global micro-batch index): a resumed run draws the same masks as an uninterrupted
        one, and rank r of W, which trains the global micro-batches r, r + W, ... (:class:`SFTBatchSampler`), draws
        the masks one process would draw for them."""
        accumulate = self.trainer.accumulate_grad_batches
        local = self.trainer.global_step * accumulate + batch_idx % accumulate
        micro = local * self.trainer.world_size + self.trainer.global_rank
        torch.manual_seed((self.rng_seed * 1_000_003 + micro) % (2**63))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.compute_loss(batch)
        n_tokens = batch["n_tokens"]
        self.tokens_seen += n_tokens
        detached = loss.detach()
        if self.first_loss is None:
            self.first_loss = float(detached)
        previous = self._ema if self._ema is not None else torch.zeros_like(detached)
        self._ema = EMA_BETA * previous + (1 - EMA_BETA) * detached
        self._ema_count += 1
        bs = batch["input_ids"].shape[0]
        self.log("train/loss", detached, on_step=True, prog_bar=True, batch_size=bs)
        self.log("train/tokens", float(n_tokens), on_step=True, reduce_fx="sum", batch_size=bs)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], on_step=True, prog_bar=True, batch_size=bs)
        return loss

    def smoothed_loss(self) -> float:
        """Bias-corrected exponential moving average of the micro-batch losses of this run."""
        if self._ema is None:
            return float("nan")
        return float(self._ema) / (1 - EMA_BETA**self._ema_count)

    def on_train_start(self) -> None:
        self._t0 = time.perf_counter()
        self._tokens_at_start = self.tokens_seen
        self.start_step = self.trainer.global_step  # > 0 when resumed from a checkpoint

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        if self._steady_start is None and self.trainer.global_step > self.start_step:
            self._steady_start = (time.perf_counter(), self.tokens_seen)

    def on_train_end(self) -> None:
        now = time.perf_counter()
        if self._t0 is not None:
            self.fit_seconds = now - self._t0
        steady_from = self.tokens_seen
        if self._steady_start is not None:
            self.steady_seconds = now - self._steady_start[0]
            steady_from = self._steady_start[1]
        # on the module's device: NCCL reduces CUDA tensors only
        local = torch.tensor(
            [float(self.tokens_seen - self._tokens_at_start), float(self.tokens_seen - steady_from)], device=self.device
        )
        fit_tokens, steady_tokens = self.trainer.strategy.reduce(local, reduce_op="sum").tolist()
        self.fit_tokens, self.steady_tokens = int(fit_tokens), int(steady_tokens)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """FSDP: clip the gradient norm over all shards with the root FSDP module's ``clip_grad_norm_`` (the way
        torch documents; Lightning's FSDP precision refuses norm clipping). Otherwise Lightning's own clipping."""
        if self.clip_norm:
            self.trainer.strategy.model.clip_grad_norm_(self.clip_norm)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for param in self.model.parameters():
            if param.requires_grad:
                (no_decay if id(param) in self._no_decay else decay).append(param)
        groups = [{"params": decay, "weight_decay": self.stage.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups, lr=self.stage.lr)
        max_steps = self.stage.max_steps
        schedule = partial(
            lr_lambda,
            max_steps=max_steps,
            warmup_steps=warmup_steps_for(max_steps, self.stage.warmup_ratio),
            schedule=self.stage.schedule,
            floor_ratio=self.stage.lr_floor_ratio,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.is_adapter and "state_dict" in checkpoint:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in self.trainable_names}
        checkpoint["bft_tokens_seen"] = self.tokens_seen

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.tokens_seen = int(checkpoint.get("bft_tokens_seen", 0))
        self.start_step = int(checkpoint.get("global_step", 0))

    # --- export -----------------------------------------------------------------------------------------------
    def save_model(self, folder, tokenizer) -> None:
        """Save the adapter (LoRA) or the full model, plus the tokenizer, into ``folder``."""
        lm = self._causal_lm()
        for name, value in self.original_dropout.items():
            setattr(lm.config, name, value)
        lm.config.use_cache = True
        self.model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
