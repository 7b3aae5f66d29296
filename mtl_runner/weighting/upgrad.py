"""Unconflicting Projection of Gradients (UPGrad).

Paper: P. Quinton, V. Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2024,
https://arxiv.org/abs/2406.16232 (UPGrad, Eq. 5 and Proposition 1; the torchjd library).
Weight: each task gradient, scaled by its preference u_k (1/K by default), is projected onto the
dual cone of the gradients, {x : ⟨x, g_j⟩ ≥ 0 for all j}; the update is the sum of the K
projections. In weights: w^(i) = argmin_v vᵀM̃v subject to v ≥ u_i·e_i, with M̃ the Gram matrix
M = JJᵀ divided by its trace (plus ``reg_eps``·I), and c = Σ_i w^(i); the shared parameters
move along Σ_k c_k g_k. The QPs are solved exactly (non-negative least squares in float64). The
direction never conflicts with a task: ⟨g_k, d⟩ ≥ 0 with ``reg_eps=0``, only
⟨g_k, d⟩ ≥ −reg_eps·tr(M)·c_k with a ridge. A direction below the rounding error of computing
it (a numerically Pareto-stationary point) is returned as 0.
Hyperparameters:
``preference`` ([] = 1/K each) — u, one non-negative number per task in the dataset's order.
``norm_eps`` (0) — M̃ = 0 (so c = u, the preference-weighted mean) when tr(M) < norm_eps.
``reg_eps`` (0) — added to the diagonal of M/tr(M); torchjd needs it to keep quadprog's matrix
positive definite, the exact solver here does not.
The paper's UPGrad has neither epsilon; the defaults 0 keep it exact and scale-invariant.
State: none.
Grad sources: params and features (the method only reads the Gram matrix of its rows).
Other implementations: torchjd's UPGradWeighting (and LibMTL's UPGrad, copied from it) uses
``norm_eps=1e-4`` and ``reg_eps=1e-4``: set both to get its weights (they agree to 1e-12).
Note that torchjd's norm_eps is absolute, so for gradients with ‖J‖_F² < 1e-4 it returns the
mean, which may conflict. LibMTL supports only grad_source=params and logs the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mtl_runner.weighting._checks import require_non_negative
from mtl_runner.weighting._min_norm import (
    aggregation,
    dual_cone_projection,
    negligible,
    normalized_gram,
    not_finite,
    preference_vector,
    solve_on_gram,
)
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource


class UPGrad(GradientWeighting):
    non_conflicting = True

    def __init__(
        self,
        task_names: Sequence[str],
        preference: list[float] = [],  # noqa: B006 - the schema's default; never mutated
        norm_eps: float = 0.0,
        reg_eps: float = 0.0,
        grad_source: GradSource = GradSource.params,
    ) -> None:
        super().__init__(task_names, grad_source)
        self.preference = preference_vector(preference, self.num_tasks)
        self.norm_eps = require_non_negative("norm_eps", norm_eps)
        self.reg_eps = require_non_negative("reg_eps", reg_eps)

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        weights, gram = solve_on_gram(jacobian, self.weights_from_gram)
        return aggregation(weights, jacobian, negligible(weights, gram, jacobian.dtype))

    def weights_from_gram(self, gram: np.ndarray) -> np.ndarray:
        if not_finite(gram):
            return self.preference
        scaled = normalized_gram(gram, self.norm_eps, self.reg_eps)
        return dual_cone_projection(scaled, np.diag(self.preference)).sum(axis=0)
