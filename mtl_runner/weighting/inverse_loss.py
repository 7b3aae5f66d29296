"""Inverse-loss weighting.

Paper: none canonical; a common heuristic that equalises the tasks' contributions
(each c_k·L_k is the same), listed in DESIGN.md §5.
Weight: c_k = (1/L_k) / Σ_j (1/L_j) from the current batch's detached losses; the weights sum to
1 and L_total = K / Σ_j (1/L_j) in value (with detached c, the gradient is Σ_k c_k ∇L_k).
Hyperparameters: ``eps`` — losses are clamped to at least eps before inverting, so a zero loss
gives that task (almost) all the weight instead of a division by zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mtl_runner.errors import ConfigError
from mtl_runner.weighting.base import LossWeighting


class InverseLoss(LossWeighting):
    def __init__(self, task_names: Sequence[str], eps: float = 1e-12) -> None:
        super().__init__(task_names)
        if not eps > 0:
            raise ConfigError(f"weighting.eps={eps} is not allowed: it must be positive")
        self.eps = eps

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        inverse = 1.0 / losses.clamp_min(self.eps)
        return inverse / inverse.sum()
