"""Mean, standard error and count of a metric over a group of runs, and the cell formatting of the report."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MISSING = "—"


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Estimate:
    mean: float | None
    se: float | None
    n: int


def estimate(values: Iterable[Any], ses: Iterable[Any] | None = None) -> Estimate:
    """Mean over runs; SE = sample std / sqrt(n) across runs when n >= 2, else the single run's own reported SE.

    Runs without a value are left out (and not counted in n).
    """
    pairs = [(float(v), s) for v, s in zip(values, ses if ses is not None else _nones(), strict=False) if not is_missing(v)]
    if not pairs:
        return Estimate(None, None, 0)
    xs = [v for v, _ in pairs]
    n = len(xs)
    mean = sum(xs) / n
    if n >= 2:
        var = sum((x - mean) ** 2 for x in xs) / (n - 1)
        se: float | None = math.sqrt(var / n)
    else:
        se = None if is_missing(pairs[0][1]) else float(pairs[0][1])
    return Estimate(mean, se, n)


def _nones() -> Iterable[None]:
    while True:
        yield None


def fmt(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals, or the missing mark."""
    if is_missing(value):
        return MISSING
    if isinstance(value, int | float):
        return f"{value:.{digits}f}"
    return str(value)
