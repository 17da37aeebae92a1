"""Supervised fine-tuning (LoRA or full) with Lightning: one path for the backward, seed, Mi and final models.

The exports load lazily: the CLI validates ``trainer.launcher`` (:mod:`bft.sft.launch`) before any work, and that
must not import torch and Lightning.
"""

__all__ = ["TrainResult", "train_sft"]


def __getattr__(name: str):
    if name in __all__:
        from bft.sft import train

        return getattr(train, name)
    raise AttributeError(f"module 'bft.sft' has no attribute {name!r}")
