"""Impartial multi-task learning, gradient balance (IMTL-G), optionally with loss balance (IMTL).

Paper: L. Liu, Y. Li, Z. Kuang, J.-H. Xue, Y. Chen, W. Yang, Q. Liao, W. Zhang, "Towards
Impartial Multi-task Learning", ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr
(§3.2 IMTL-G, §3.1 IMTL-L, §3.3 the hybrid IMTL).
Weight: the shared parameters move along d = Σ_k c_k g_k. IMTL-G picks α with Σ_k α_k = 1 such
that d has the same projection on every unit gradient u_k = g_k/‖g_k‖. The paper's closed form
is α_{2:K} = g_1 Uᵀ (D Uᵀ)^{-1}, α_1 = 1 − Σ α_{2:K} with D = [g_1 − g_k]ᵀ_{k≥2} and
U = [u_1 − u_k]ᵀ_{k≥2}. The same condition in Gram form (M = J Jᵀ, n_k = √M_kk = ‖g_k‖) is
M α = λ n, hence α = M⁺n / Σ(M⁺n) — equal to the closed form whenever D Uᵀ is invertible, and
still defined when J has linearly dependent rows (torchjd's generalisation, from Quinton & Rey,
"Jacobian Descent for Multi-Objective Optimization", 2024). Eigenvalues of M below
λ_max·K·eps (eps of J's dtype) count as zero. When Σ(M⁺n) vanishes (|Σ| ≤ K·eps·Σ|M⁺n|) the
only α with equal projections and Σα = 1 give d = 0: α is then the null-space vector of M
closest to 𝟙, rescaled to sum 1 (e.g. [½, ½] for g_2 = −g_1), or 0 when no such vector exists.
When every gradient is zero, or one is not finite (overflow), α = 𝟙/K.
With ``loss_scaling`` the gradients are those of the scaled losses e^{s_k}L_k − s_k, i.e.
e^{s_k} g_k, so the logged weight w.r.t. the unscaled gradients is c_k = α_k·e^{s_k} (α from
IMTL-G on the rows e^{s_k} g_k); without it c_k = α_k. The weights sum to 1 (IMTL-G) and may be
negative.
Hyperparameters: ``loss_scaling`` (false) — false: IMTL-G alone (the paper's §3.2, torchjd's
IMTLG); true: the hybrid IMTL of §3.3 (LibMTL's IMTL), with a learned s_k per task,
initialised to 0; s receives ∂(e^{s_k}L_k − s_k)/∂s_k = e^{s_k}L_k − 1 and is stepped by the
trainer's optimizer. ``grad_source``.
State: none for IMTL-G. With ``loss_scaling``: s (a learnable parameter: returned by
``parameters()``, so the trainer optimises it with the model's optimizer and learning rate in a
group of its own, and saved in ``state_dict``).
Grad sources: ``params`` (the paper) and ``features`` (the paper also proposes the gradients
w.r.t. the shared representation to save computation).
Other implementations: torchjd's IMTLGWeighting computes the same α (pinv(M)·n normalised; it
returns 0 where Σ(M⁺n) ≈ 0 even when, as for g_2 = −g_1, weights with Σα = 1 exist); its IMTL-L
part is the separate ``IMTLL`` scalarizer (see weighting=imtl_l here). LibMTL's IMTL is always the
hybrid (use ``loss_scaling=true``), inverts D Uᵀ with ``torch.inverse`` (fails on singular
matrices) and logs α without the e^{s} factor; its heads get the unweighted gradients of the
scaled losses, whereas here the head of task k gets c_k ∇_head L_k (the project-wide
convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mtl_runner.weighting._balancing import spectrum
from mtl_runner.weighting._gram import as_weights, gram_matrix, precision
from mtl_runner.weighting._parameters import follow_device, load_parameter
from mtl_runner.weighting.base import StepContext
from mtl_runner.weighting.gradients import (
    Aggregation,
    GradientWeighting,
    GradSource,
    accumulate_gradient,
)


def imtl_g_weights(gram: np.ndarray, eps: float) -> np.ndarray:
    """α with Σα = 1 and Mα ∝ √diag(M), from a float64 Gram matrix (see the module docstring)."""
    num_tasks = len(gram)
    decomposition = spectrum(gram, eps)
    if decomposition is None:  # every gradient is zero (any α gives d = 0), or one overflowed
        return np.full(num_tasks, 1.0 / num_tasks)
    eigenvalues, vectors, dropped, scale = decomposition
    norms = np.sqrt(gram.diagonal() / scale)
    basis = vectors[:, dropped:]
    direction = basis @ ((norms @ basis) / eigenvalues[dropped:])  # M⁺ n (of M / s)
    total = direction.sum()
    if abs(total) > num_tasks * eps * np.abs(direction).sum():
        return direction / total
    null = vectors[:, :dropped]
    towards_ones = null @ null.sum(axis=0)  # Mα = 0 (equal projections, all zero), closest to 𝟙
    if towards_ones.sum() > num_tasks * eps:
        return towards_ones / towards_ones.sum()
    return np.zeros(num_tasks)


class IMTL(GradientWeighting):
    def __init__(
        self,
        task_names: Sequence[str],
        loss_scaling: bool = False,
        grad_source: GradSource = GradSource.params,
    ) -> None:
        super().__init__(task_names, grad_source)
        self.loss_scaling = bool(loss_scaling)
        self.log_scale = torch.nn.Parameter(torch.zeros(self.num_tasks))

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        gram = gram_matrix(jacobian)
        scales = np.ones(self.num_tasks)
        if self.loss_scaling:  # rows e^{s_k} g_k: the gradients of e^{s_k} L_k − s_k
            scales = np.exp(self.log_scale.detach().cpu().numpy().astype(np.float64))
            gram = scales[:, None] * gram * scales[None, :]
        alpha = imtl_g_weights(gram, precision(jacobian.dtype))
        return Aggregation(weights=as_weights(alpha * scales, jacobian))

    def backward(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        weights = super().backward(losses, context)
        if self.loss_scaling:  # IMTL-L: ∂(e^{s_k} L_k − s_k)/∂s_k = e^{s_k} L_k − 1
            log_scale = follow_device(self.log_scale, losses)
            grad = torch.exp(log_scale.detach()) * losses.detach().to(log_scale.dtype) - 1.0
            accumulate_gradient(log_scale, grad * context.loss_scale)
        return weights

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.log_scale] if self.loss_scaling else []

    def state_dict(self) -> dict[str, Any]:
        if not self.loss_scaling:
            return {}
        return {"log_scale": self.log_scale.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self.loss_scaling:
            super().load_state_dict(state)
            return
        load_parameter(self.log_scale, state["log_scale"])
