"""Supervised fine-tuning (LoRA or full) with Lightning: one path for the backward, seed, Mi and final models."""

from bft.sft.train import TrainResult, train_sft

__all__ = ["TrainResult", "train_sft"]
