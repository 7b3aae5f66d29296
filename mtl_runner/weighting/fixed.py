"""Fixed weighting: hand-chosen constant weights.

Paper: none; a grid of fixed weights is the classic (and expensive) tuning baseline.
Weight: c_k = ``weights[k]`` (dataset task order), constant over training.
Hyperparameters: ``weights`` — one non-negative number per task; at least one must be positive.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mtl_runner.errors import ConfigError
from mtl_runner.weighting.base import LossWeighting


class Fixed(LossWeighting):
    permutation_invariant = False  # the weights belong to task positions, not to loss values

    def __init__(self, task_names: Sequence[str], weights: list[float]) -> None:
        super().__init__(task_names)
        if len(weights) != self.num_tasks:
            raise ConfigError(
                f"weighting.weights={list(weights)} has {len(weights)} entries but the dataset "
                f"has {self.num_tasks} tasks ({', '.join(self.task_names)}): give one per task"
            )
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise ConfigError(
                f"weighting.weights={list(weights)} is not allowed: weights must be "
                "non-negative and at least one must be positive"
            )
        self._weights = torch.tensor(weights, dtype=torch.float32)

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        if self._weights.device != losses.device or self._weights.dtype != losses.dtype:
            self._weights = self._weights.to(losses.device, losses.dtype)
        return self._weights
