"""Small helpers shared by the loss-based methods (uw, imtl_l, rlw, gls, stch, famo)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mtl_runner.weighting._checks import require


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
