"""A test-only weighting method that makes training diverge at a chosen epoch."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mtl_runner.weighting import LossWeighting


class DivergeAtEpoch(LossWeighting):
    """Equal weights until ``epoch``, then NaN weights (so the parameters become NaN)."""

    def __init__(self, task_names: Sequence[str], epoch: int = 3) -> None:
        super().__init__(task_names)
        self.diverge_at = epoch
        self.epoch = 1

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        if self.epoch >= self.diverge_at:
            return torch.full_like(losses, float("nan"))
        return torch.ones_like(losses)

    def on_epoch_end(self, train_losses: torch.Tensor) -> None:
        self.epoch += 1
