"""Geometric loss strategy (GLS).

Paper: S. Chennupati, G. Sistu, S. Yogamani, S. A. Rawashdeh, "MultiNet++: Multi-Stream Feature
Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019,
https://openaccess.thecvf.com/content_CVPRW_2019/papers/WAD/Chennupati_MultiNet_Multi-Stream_Feature_Aggregation_and_Geometric_Loss_Strategy_for_Multi-Task_CVPRW_2019_paper.pdf
Weight: L_total = (Π_k L_k)^{1/K}, the geometric mean of the losses, computed in log space as
exp(mean_k log L_k) so that a product of many small or large losses never under- or overflows.
The logged c_k = ∂L_total/∂L_k = (Π_j L_j)^{1/K} / (K·L_k), the true coefficient, computed as
exp(mean_j log L_j − log L_k) / K. The weights change every step; Σ_k c_k L_k = L_total.
Hyperparameters: ``eps`` (1e-12) — each loss is clamped to at least eps before the logarithm, so a
zero or negative loss gives a finite total; a clamped task's coefficient is exactly 0 (the clamp
cuts its gradient), and that is what is logged.
State: none.
Grad sources: n/a (loss-based: L_total is backpropagated once; heads get c_k ∇_head L_k).
Other implementations: LibMTL's ``GLS`` backpropagates the same total (as a plain product, which
can under- or overflow) but logs L_k/(K·Π_j L_j), which is not the coefficient it applies.
torchjd's ``GeometricMean`` scalarizer computes the same total in log space, raises on a negative
loss and exposes no weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mtl_runner.weighting._checks import require
from mtl_runner.weighting.base import Combined, LossWeighting


class GLS(LossWeighting):
    def __init__(self, task_names: Sequence[str], eps: float = 1e-12) -> None:
        super().__init__(task_names)
        require(eps > 0, "eps", eps, "it must be positive")
        self.eps = eps

    def combine(self, losses: torch.Tensor) -> Combined:
        log_losses = losses.clamp_min(self.eps).log()
        mean_log = log_losses.mean()
        total = torch.exp(mean_log)
        coefficient = torch.exp(mean_log.detach() - log_losses.detach()) / self.num_tasks
        weights = torch.where(losses.detach() >= self.eps, coefficient, 0.0)
        return Combined(loss=total, weights=weights)
