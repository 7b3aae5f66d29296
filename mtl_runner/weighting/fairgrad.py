"""Fair resource allocation in multi-task learning (FairGrad).

Paper: H. Ban, K. Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024,
https://arxiv.org/abs/2402.15638 (Eq. 4, Algorithm 1).
Weight: the w > 0 that solves M w = w^{−1/α} (elementwise power; M = J Jᵀ), so the shared
parameters move along d = Σ_k w_k g_k with g_kᵀd = w_k^{−1/α} > 0 for every task (never
conflicting). The logged c = w; it is not normalised: scaling M by s scales w by s^{−α/(α+1)}
(for α = 1 the step d then has the same size whatever the gradient scale).
How it is solved: the equation is the stationarity condition of the strictly convex
f(w) = ½ wᵀMw + Σ_k φ(w_k) on w > 0, with φ(w) = −log w for α = 1 and
φ(w) = −w^{1−1/α}/(1−1/α) otherwise (φ' = −w^{−1/α}, φ'' > 0). M is first divided by
s = mean_k ‖g_k‖²: if M̃ w̃ = w̃^{−1/α} then w = s^{−α/(α+1)} w̃ solves the original equation
exactly (s·s^{−α/(α+1)} = s^{1/(α+1)} = (s^{−α/(α+1)})^{−1/α}). f is minimised by damped Newton
steps in float64 (each keeps w > 0; Armijo backtracking on f, or on the residual once f no
longer resolves the decrease) until every equation holds to a relative 1e-12, so the weights
are exact at any gradient scale.
No solution: a minimiser exists if and only if no convex combination of the gradients is zero
(0 is not in their convex hull; otherwise the tasks are Pareto-stationary and no direction
improves them all). The solver treats 0 as in the hull when an iterate's convex combination
v = w/Σw has vᵀM̃v ≤ K·eps (eps of J's dtype; the iterates of an unbounded problem get there in
a few dozen steps) or when 1000 steps do not converge. Then, without a warning, the shared
parameters are left unchanged for that step (direction 0) and the logged weights are that v
(Σv = 1, Σ_k v_k g_k ≈ 0), which also scale the heads. If every gradient is zero, v = 𝟙/K.
Hyperparameters: ``alpha`` (1.0, LibMTL's default: proportional fairness, where the condition
is Nash-MTL's w ⊙ Mw = 𝟙; larger α moves towards max-min fairness) — must be positive: α = 0 is
linear scalarisation (weighting=equal). ``grad_source``.
State: none.
Grad sources: ``params`` (the paper) and ``features`` (the same solve on ∂L_k/∂z of the batch's
shared representation).
Other implementations: LibMTL's FairGrad (from the official code) and torchjd's
FairGradWeighting solve the same equation with ``scipy.optimize.least_squares`` from the uniform
start: its absolute tolerances leave the weights several percent off when the gradients are
small (8.7% at gradient norms ≈ 1e-3), and it silently returns large, unconverged weights when 0
is in the convex hull; torchjd also allows α = 0 (weights 1/K). LibMTL weights the heads by w_k
as here; torchjd's ``mtl_backward`` gives them unweighted gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mtl_runner.weighting._balancing import (
    gram_matrix,
    precision,
    to_weights,
)
from mtl_runner.weighting._checks import require
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource

_RELATIVE_RESIDUAL = 1e-12
_MAX_STEPS = 1000


def solve_fairgrad(gram: np.ndarray, alpha: float, eps: float) -> tuple[np.ndarray, bool]:
    """(w, True) with M w = w^{−1/α}, or (v, False) with v on the simplex and Jᵀv ≈ 0."""
    num_tasks = gram.shape[0]
    uniform = np.full(num_tasks, 1.0 / num_tasks)
    scale = float(np.mean(np.diag(gram)))
    if not (scale > 0 and np.isfinite(gram).all()):
        return uniform, False
    matrix = gram / scale
    power = 1.0 / alpha
    tolerance = num_tasks * eps

    def objective(w: np.ndarray) -> float:
        barrier = -np.log(w).sum() if power == 1.0 else -(w ** (1.0 - power)).sum() / (1.0 - power)
        return 0.5 * float(w @ matrix @ w) + float(barrier)

    # start from the best multiple of 𝟙: t·(𝟙ᵀM̃𝟙) = K·t^{−1/α}
    spread = max(float(matrix.sum()), tolerance)
    w = np.full(num_tasks, (num_tasks / spread) ** (alpha / (alpha + 1.0)))
    value = objective(w)
    magnitude = np.abs(matrix)

    def relative_residual(w: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        target = 1.0 / w if power == 1.0 else w ** (-power)
        residual = matrix @ w - target
        return residual, float((np.abs(residual) / (magnitude @ w + target)).max()), target

    residual, error, target = relative_residual(w)
    diagonal = np.arange(num_tasks)
    for _ in range(_MAX_STEPS):
        if error <= _RELATIVE_RESIDUAL:
            return w * scale ** (-alpha / (alpha + 1.0)), True
        combination = w / w.sum()
        if combination @ matrix @ combination <= tolerance:
            return combination, False  # 0 is (numerically) in the convex hull
        hessian = matrix.copy()
        hessian[diagonal, diagonal] += power * target / w
        try:
            step = -np.linalg.solve(hessian, residual)
        except np.linalg.LinAlgError:  # pragma: no cover - the Hessian is positive definite
            break
        shrinking = step < 0
        size = (
            min(1.0, 0.99 * float(np.min(-w[shrinking] / step[shrinking])))
            if shrinking.any()
            else 1.0
        )
        slope = float(residual @ step)
        while True:  # Armijo on f, or (where f no longer resolves the decrease) the residual
            candidate = w + size * step
            candidate_value = objective(candidate)
            candidate_residual, candidate_error, candidate_target = relative_residual(candidate)
            if (
                candidate_value <= value + 1e-4 * size * slope
                or candidate_error <= 0.5 * error
                or size < 1e-12
            ):
                break
            size *= 0.5
        if not np.isfinite(candidate_value) or (candidate == w).all():
            break
        w, value = candidate, candidate_value
        residual, error, target = candidate_residual, candidate_error, candidate_target
    return w / w.sum(), False


class FairGrad(GradientWeighting):
    non_conflicting = True

    def __init__(
        self,
        task_names: Sequence[str],
        alpha: float = 1.0,
        grad_source: GradSource = GradSource.params,
    ) -> None:
        super().__init__(task_names, grad_source)
        require(
            np.isfinite(alpha) and alpha > 0,
            "alpha",
            alpha,
            "it must be a positive number (alpha = 0 is linear scalarisation: weighting=equal)",
        )
        self.alpha = float(alpha)

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        gram = gram_matrix(jacobian).numpy()
        weights, solved = solve_fairgrad(gram, self.alpha, precision(jacobian))
        weights = to_weights(torch.from_numpy(weights), jacobian)
        if solved:
            return Aggregation(weights=weights)
        return Aggregation(weights=weights, direction=torch.zeros_like(jacobian[0]))
