"""Impartial multi-task learning, loss balance (IMTL-L).

Paper: L. Liu, Y. Li, Z. Kuang, J.-H. Xue, Y. Chen, W. Yang, Q. Liao, W. Zhang, "Towards
Impartial Multi-task Learning", ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr (the
loss-balance part only; the gradient-balance part IMTL-G is a separate, gradient-based method).
Weight: each task has a learned scale parameter s_k and L_total = Σ_k (e^{s_k}·L_k − s_k); the
regulariser −s_k keeps s_k from running to −∞. The logged c_k = ∂L_total/∂L_k = e^{s_k}, the
value of s used in this step. The optimum of s_k for a fixed loss is s_k = −log L_k, where every
scaled loss e^{s_k}·L_k equals 1 — hence "impartial".
Hyperparameters: ``initial_log_scale`` (0.0) — the starting s_k of every task (the paper's,
LibMTL's and torchjd's value: the total starts as the plain sum).
State: the scales s (a learnable parameter: returned by ``parameters()``, so the trainer
optimises it with the model's optimizer and learning rate in a group of its own, and saved in
``state_dict``).
Grad sources: n/a (loss-based: L_total is backpropagated once; heads get c_k ∇_head L_k).
Other implementations: torchjd's ``IMTLL`` scalarizer is the same (s = 0, no weights exposed).
LibMTL has no IMTL-L on its own: its ``IMTL`` applies IMTL-G to the gradients of the scaled
losses e^{s_k}L_k − s_k and logs the IMTL-G α without the e^{s} factor. IMTL-L equals 2·UW at
s = −(UW's log-variance), so it balances the losses exactly like UW up to a factor of two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mtl_runner.weighting._checks import require_finite
from mtl_runner.weighting._parameters import follow_device, load_parameter
from mtl_runner.weighting.base import Combined, LossWeighting


class IMTLL(LossWeighting):
    def __init__(self, task_names: Sequence[str], initial_log_scale: float = 0.0) -> None:
        super().__init__(task_names)
        require_finite("initial_log_scale", initial_log_scale)
        self.log_scale = torch.nn.Parameter(torch.full((self.num_tasks,), float(initial_log_scale)))

    def combine(self, losses: torch.Tensor) -> Combined:
        log_scale = follow_device(self.log_scale, losses)
        scale = torch.exp(log_scale)
        total = (scale * losses - log_scale).sum()
        return Combined(loss=total, weights=scale.detach().to(losses.dtype))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.log_scale]

    def state_dict(self) -> dict[str, Any]:
        return {"log_scale": self.log_scale.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parameter(self.log_scale, state["log_scale"])
