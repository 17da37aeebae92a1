"""Supervised fine-tuning (LoRA or full) with Lightning: one path for the backward, seed, Mi and final models.

The exports load lazily: the CLI validates ``trainer.launcher`` (:mod:`bft.sft.launch`) before any work, and that
must not import torch and Lightning.
"""

__all__ = ["TrainResult", "train_sft"]


def __getattr__(name: str):
    if name == "TrainResult":
        from bft.sft.result import TrainResult

        return TrainResult
    if name == "train_sft":
        from bft.sft.train import train_sft

        return train_sft
    raise AttributeError(f"module 'bft.sft' has no attribute {name!r}")
