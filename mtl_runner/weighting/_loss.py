"""Small helpers shared by the loss-based methods (uw, imtl_l, rlw, gls, stch, famo)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mtl_runner.errors import ConfigError


def require(condition: bool, key: str, value: object, allowed: str) -> None:
    """Raise the one-line ConfigError ``weighting.<key>=<value> is not allowed: <allowed>``."""
    if not condition:
        raise ConfigError(f"weighting.{key}={value} is not allowed: {allowed}")


def require_finite(key: str, value: float) -> None:
    require(math.isfinite(value), key, value, "it must be a finite number")


def per_task(
    key: str, values: Sequence[float], task_names: Sequence[str], default: float
) -> torch.Tensor:
    """One float64 value per task from a config list; ``[]`` means ``default`` for every task."""
    if not values:
        return torch.full((len(task_names),), float(default), dtype=torch.float64)
    values = [float(v) for v in values]
    require(
        len(values) == len(task_names),
        key,
        values,
        f"give one number per task ({', '.join(task_names)}), or [] for {default:g} each",
    )
    require(all(math.isfinite(v) for v in values), key, values, "every entry must be finite")
    return torch.tensor(values, dtype=torch.float64)
