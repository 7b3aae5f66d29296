"""Dual-cone projection of the preference-weighted mean gradient (DualProj).

Paper: P. Quinton, V. Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2024,
https://arxiv.org/abs/2406.16232 (the DualProj aggregator; Proposition 1; the torchjd library).
Weight: the preference-weighted gradient Jᵀu (u = 1/K each by default: the mean gradient) is
projected onto the dual cone of the gradients, {x : ⟨x, g_j⟩ ≥ 0 for all j}. In weights:
c = argmin_v vᵀM̃v subject to v ≥ u, with M̃ the Gram matrix M = JJᵀ divided by its trace (plus
``reg_eps``·I); the shared parameters move along Σ_k c_k g_k. The QP is solved exactly in float64
(an active-set method on M̃; SciPy's nnls where M̃ is nearly singular). The direction never
conflicts with a task: ⟨g_k, d⟩ ≥ 0 with ``reg_eps=0``, only ⟨g_k, d⟩ ≥ −reg_eps·tr(M)·c_k with
a ridge. A direction below the rounding error of computing it (a numerically Pareto-stationary
point) is returned as 0.
Hyperparameters:
``preference`` ([] = 1/K each) — u, one non-negative number per task in the dataset's order.
``norm_eps`` (0) — M̃ = 0 (so c = u, the preference-weighted mean) when tr(M) < norm_eps.
``reg_eps`` (0) — added to the diagonal of M/tr(M); torchjd needs it to keep quadprog's matrix
positive definite, the exact solver here does not.
The paper's DualProj has neither epsilon; the defaults 0 keep it exact and scale-invariant.
State: none.
Grad sources: params and features (the method only reads the Gram matrix of its rows).
Other implementations: torchjd's DualProjWeighting uses ``norm_eps=1e-4`` and ``reg_eps=1e-4``:
set both to get its weights (they agree to 1e-12). Its norm_eps is absolute, so for gradients
with ‖J‖_F² < 1e-4 it returns the mean, which may conflict. LibMTL has no DualProj.
"""

from __future__ import annotations

import numpy as np

from mtl_runner.weighting._min_norm import DualConeWeighting, dual_cone_projection


class DualProj(DualConeWeighting):
    aggregates_task_subsets = False  # the preference vector has one entry per task

    def project(self, scaled_gram: np.ndarray) -> np.ndarray:
        # one projection: the preference vector u itself
        return dual_cone_projection(scaled_gram, self.preference[None, :])[0]
