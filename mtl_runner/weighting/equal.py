"""Equal weighting (EW).

Paper: none; the baseline every multi-task weighting paper compares against.
Weight: c_k = 1 for every task, so L_total = Σ_k L_k.
Other implementations: LibMTL's ``EW`` and torchjd's ``Mean`` aggregator scale differently —
LibMTL sums the losses as here; torchjd's ``Mean`` averages them (c_k = 1/K), which only rescales
the learning rate.
"""

from __future__ import annotations

import torch

from mtl_runner.weighting.base import LossWeighting


class Equal(LossWeighting):
    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(losses)
