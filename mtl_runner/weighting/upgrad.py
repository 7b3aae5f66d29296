"""Unconflicting Projection of Gradients (UPGrad).

Paper: P. Quinton, V. Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2024,
https://arxiv.org/abs/2406.16232 (UPGrad, Eq. 5 and Proposition 1; the torchjd library).
Weight: each task gradient, scaled by its preference u_k (1/K by default), is projected onto the
dual cone of the gradients, {x : ⟨x, g_j⟩ ≥ 0 for all j}; the update is the sum of the K
projections. In weights: w^(i) = argmin_v vᵀM̃v subject to v ≥ u_i·e_i, with M̃ the Gram matrix
M = JJᵀ divided by its trace (plus ``reg_eps``·I), and c = Σ_i w^(i); the shared parameters
move along Σ_k c_k g_k. The QPs are solved exactly in float64 (an active-set
method on M̃; SciPy's nnls where M̃ is nearly singular). The direction never conflicts with a
task: ⟨g_k, d⟩ ≥ 0 with ``reg_eps=0``, only ⟨g_k, d⟩ ≥ −reg_eps·tr(M)·c_k with a ridge. A
direction below the rounding error of computing it (a numerically Pareto-stationary point) is
returned as 0.
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

import numpy as np

from mtl_runner.weighting._min_norm import DualConeWeighting, dual_cone_projection


class UPGrad(DualConeWeighting):
    aggregates_task_subsets = False  # the preference vector has one entry per task

    def project(self, scaled_gram: np.ndarray) -> np.ndarray:
        # one projection per task: u_i·e_i for every i, summed
        return dual_cone_projection(scaled_gram, np.diag(self.preference)).sum(axis=0)
