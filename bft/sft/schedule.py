"""Learning-rate schedule: linear warmup, then cosine/linear decay to a floor *ratio* of the peak rate."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "constant")


def lr_lambda(step: int, max_steps: int, warmup_steps: int, schedule: str, floor_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Warmup rises linearly to 1.0 over ``warmup_steps`` steps; the decay then reaches exactly ``floor_ratio`` at the
    last step (``max_steps - 1``) and stays there. ``floor_ratio`` is a ratio, not a rate: Humpback's 1e-5 -> 9e-6
    is ``floor_ratio=0.9``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {SCHEDULES}")
    if not 0.0 <= floor_ratio <= 1.0:
        raise ValueError(f"lr_floor_ratio must lie in [0, 1], got {floor_ratio}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, max_steps - 1 - warmup_steps)))
    shape = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return floor_ratio + (1.0 - floor_ratio) * shape


def warmup_steps_for(max_steps: int, warmup_ratio: float) -> int:
    """Warmup length in optimizer steps (rounded; zero only when the ratio is zero)."""
    if warmup_ratio <= 0:
        return 0
    return max(1, round(warmup_ratio * max_steps))
