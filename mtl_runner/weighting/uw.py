"""Uncertainty weighting (UW).

Paper: A. Kendall, Y. Gal, R. Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses
for Scene Geometry and Semantics", CVPR 2018, https://arxiv.org/abs/1705.07115 (Eq. 7).
Weight: each task has a learned log-variance s_k = log σ_k² and
L_total = Σ_k [ L_k / (2·exp(s_k)) + s_k / 2 ] (the regulariser s_k/2 is part of the total, so
the total can be negative). The logged c_k = ∂L_total/∂L_k = 1 / (2·exp(s_k)), the value of s
used in this step (before the optimizer moves it). At the optimum of s_k for a fixed loss,
s_k = log L_k and c_k = 1/(2·L_k).
Hyperparameters: ``initial_log_variance`` (0.0) — the starting s_k of every task. The paper
states no initial value; 0 (σ² = 1, every c_k = 0.5, as torchjd) is the neutral choice.
LibMTL starts at −0.5 (c_k ≈ 0.824): set ``initial_log_variance=-0.5`` for its variant.
State: the log-variances s (a learnable parameter: returned by ``parameters()``, so the trainer
optimises it with the model's optimizer and learning rate in a group of its own, and saved in
``state_dict``).
Grad sources: n/a (loss-based: L_total is backpropagated once; heads get c_k ∇_head L_k).
Other implementations: the same loss form as LibMTL's ``UW`` and torchjd's ``UW`` scalarizer;
both apply Eq. 7 (the regression form) to every task, as here, not the paper's classification
form (Eq. 10, 1/σ² · L + log σ). They differ only in the initial s (LibMTL −0.5, torchjd 0);
LibMTL logs the same 1/(2e^s), torchjd exposes no weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mtl_runner.weighting._checks import require_finite
from mtl_runner.weighting._parameters import follow_device, load_parameter
from mtl_runner.weighting.base import Combined, LossWeighting


class UW(LossWeighting):
    def __init__(self, task_names: Sequence[str], initial_log_variance: float = 0.0) -> None:
        super().__init__(task_names)
        require_finite("initial_log_variance", initial_log_variance)
        self.log_variance = torch.nn.Parameter(
            torch.full((self.num_tasks,), float(initial_log_variance))
        )

    def combine(self, losses: torch.Tensor) -> Combined:
        log_variance = follow_device(self.log_variance, losses)
        half_precision = 0.5 * torch.exp(-log_variance)  # 1 / (2σ²)
        total = (half_precision * losses + 0.5 * log_variance).sum()
        return Combined(loss=total, weights=half_precision.detach().to(losses.dtype))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.log_variance]

    def state_dict(self) -> dict[str, Any]:
        return {"log_variance": self.log_variance.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parameter(self.log_variance, state["log_variance"])
