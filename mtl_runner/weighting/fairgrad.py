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

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from mtl_runner.weighting._checks import require
from mtl_runner.weighting._gram import as_weights, gram_matrix, lu_solve, precision
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource

_RELATIVE_RESIDUAL = 1e-12
_MAX_STEPS = 1000


class _Iterate(NamedTuple):
    """A point w > 0 with what the solver reads of it (on the normalised M̃)."""

    weights: np.ndarray
    value: float  # f(w)
    quadratic: float  # wᵀM̃w
    target: np.ndarray  # w^{−1/α}
    residual: np.ndarray  # M̃w − w^{−1/α}
    error: float  # max_k |residual_k| / (|M̃|w + w^{−1/α})_k


def _evaluate(matrix: np.ndarray, magnitude: np.ndarray, power: float, w: np.ndarray) -> _Iterate:
    """f, the residual and its relative size at w (M̃w formed once for all three)."""
    product = matrix @ w
    quadratic = float(w @ product)
    if power == 1.0:
        target = 1.0 / w
        barrier = -float(np.log(w).sum())
    else:
        target = w**-power
        barrier = -float((w ** (1.0 - power)).sum()) / (1.0 - power)
    residual = product - target
    error = float((np.abs(residual) / (magnitude @ w + target)).max())
    return _Iterate(w, 0.5 * quadratic + barrier, quadratic, target, residual, error)


def solve_fairgrad(gram: np.ndarray, alpha: float, eps: float) -> tuple[np.ndarray, bool]:
    """(w, True) with M w = w^{−1/α}, or (v, False) with v on the simplex and Jᵀv ≈ 0."""
    num_tasks = len(gram)
    scale = float(gram.diagonal().mean())
    if not (scale > 0 and np.isfinite(gram).all()):
        return np.full(num_tasks, 1.0 / num_tasks), False
    matrix = gram / scale
    magnitude = np.abs(matrix)
    power = 1.0 / alpha
    tolerance = num_tasks * eps
    # start from the best multiple of 𝟙: t·(𝟙ᵀM̃𝟙) = K·t^{−1/α}
    spread = max(float(matrix.sum()), tolerance)
    start = np.full(num_tasks, (num_tasks / spread) ** (alpha / (alpha + 1.0)))
    point = _evaluate(matrix, magnitude, power, start)
    for _ in range(_MAX_STEPS):
        w = point.weights
        if point.error <= _RELATIVE_RESIDUAL:
            return w * scale ** (-alpha / (alpha + 1.0)), True
        total = float(w.sum())
        if point.quadratic <= tolerance * total * total:  # vᵀM̃v ≤ K·eps for v = w / Σw:
            return w / total, False  # 0 is (numerically) in the convex hull
        curvature = power * point.target / w  # φ''(w_k) = (1/α)·w_k^{−1/α−1}
        newton = lu_solve(matrix + np.diag(curvature), point.residual)  # the step is −newton
        if newton is None:  # pragma: no cover - the Hessian is positive definite
            break
        fastest = float((newton / w).max())  # the largest relative decrease of a weight
        size = min(1.0, 0.99 / fastest) if fastest > 0 else 1.0  # keeps w > 0
        slope = -float(point.residual @ newton)
        while True:  # Armijo on f, or (where f no longer resolves the decrease) the residual
            candidate = _evaluate(matrix, magnitude, power, w - size * newton)
            if (
                candidate.value <= point.value + 1e-4 * size * slope
                or candidate.error <= 0.5 * point.error
                or size < 1e-12
            ):
                break
            size *= 0.5
        if not math.isfinite(candidate.value) or (candidate.weights == w).all():
            break
        point = candidate
    return point.weights / point.weights.sum(), False


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
        gram = gram_matrix(jacobian)
        weights, solved = solve_fairgrad(gram, self.alpha, precision(jacobian.dtype))
        weights = as_weights(weights, jacobian)
        if solved:
            return Aggregation(weights=weights)
        return Aggregation(weights=weights, direction=torch.zeros_like(jacobian[0]))
