"""What a training stage returns, in a module of its own: the pipeline process of a launched training reads rank 0's
``result.json`` into it without importing Lightning (seconds of imports, torchmetrics' among them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainResult:
    model_dir: str  # LoRA: load_model(base_name, adapter=model_dir); full fine-tuning: load_model(model_dir)
    is_adapter: bool
    metrics: dict[str, float] = field(default_factory=dict)
    precision: str = ""  # what training ran in (resolve_precision): float32 where bf16 was asked but is not native
