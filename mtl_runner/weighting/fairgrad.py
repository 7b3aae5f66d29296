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
steps in float64 (each keeps w > 0; a step is taken when it halves the residual, else by Armijo
backtracking on f) until every equation holds to a relative 1e-12, so the weights are exact at
any gradient scale. The start is each task's equation solved alone (M̃_kk w_k = w_k^{−1/α}),
rescaled to the best multiple and moved by one Newton step with the Hessian's diagonal. Where a
relative residual e is at most 1e-4 but above 1e-6, the step is Chebyshev's third-order one
(landing near e³ instead of e², so it saves a step; the equation's non-linear term is
elementwise, which makes its correction one more solve with the same Hessian). For the nearly
orthogonal gradients of separate tasks one or two steps then reach 1e-12.
No solution: a minimiser exists if and only if no convex combination of the gradients is zero
(0 is not in their convex hull; otherwise the tasks are Pareto-stationary and no direction
improves them all). The solver treats 0 as in the hull when an iterate's convex combination
v = w/Σw has vᵀM̃v ≤ K·eps (eps of J's dtype; the iterates of an unbounded problem get there in
a few dozen steps) or when 1000 steps do not converge; and when the iterates converge to a huge
w (Σw > 1000·K) whose residual holds only because opposite gradients cancel exactly in M̃w (e.g.
g₂ = −g₁: the equation of those tasks then reads 0 ≈ w_k^{−1/α}, tiny next to |M̃|w), it checks
the min-norm point v of the hull (as MGDA) and treats 0 as in the hull when vᵀM̃v ≤ K·eps.
Then, without a warning, the shared parameters are left unchanged for that step (direction 0)
and the logged weights are that v (Σv = 1, Σ_k v_k g_k ≈ 0), which also scale the heads. If
every gradient is zero, v = 𝟙/K.
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
from operator import truediv
from typing import NamedTuple

import numpy as np
import torch

from mtl_runner.weighting._checks import require
from mtl_runner.weighting._gram import as_weights, gram_matrix, lu_solve, nan_max, precision
from mtl_runner.weighting._min_norm import min_norm_weights
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource

_RELATIVE_RESIDUAL = 1e-12
#: above this Σw/K (M̃ has unit mean diagonal) a converged w is checked for Pareto stationarity
_LARGE_TOTAL = 1e3
_MAX_STEPS = 1000
# From a relative residual e a Newton step lands near e², a Chebyshev step near e³: between
# these two reaches of 1e-12 the (dearer) Chebyshev step saves a whole step.
_NEWTON_REACH = 1e-6
_CHEBYSHEV_REACH = 1e-4


class _Iterate(NamedTuple):
    """A point w > 0 with what the solver reads of it (on the normalised M̃)."""

    weights: np.ndarray
    quadratic: float  # wᵀM̃w
    target: np.ndarray  # w^{−1/α}
    residual: np.ndarray  # M̃w − w^{−1/α}
    error: float  # max_k |residual_k| / (|M̃|w + w^{−1/α})_k


def _evaluate(matrix: np.ndarray, magnitude: np.ndarray, power: float, w: np.ndarray) -> _Iterate:
    """The residual and its relative size at w (M̃w formed once for both)."""
    product = matrix @ w
    target = 1.0 / w if power == 1.0 else w**-power
    residual = product - target
    error = nan_max(map(truediv, map(abs, residual.tolist()), (magnitude @ w + target).tolist()))
    return _Iterate(w, float(w @ product), target, residual, error)


def _value(point: _Iterate, power: float) -> float:
    """f(w), needed only when a step has to be judged by Armijo's test (kept out of _evaluate,
    since most steps are accepted on the residual alone)."""
    w = point.weights
    if power == 1.0:
        barrier = -float(np.log(w).sum())
    else:
        barrier = -float((w ** (1.0 - power)).sum()) / (1.0 - power)
    return 0.5 * point.quadratic + barrier


def _start(matrix: np.ndarray, alpha: float, tolerance: float) -> np.ndarray:
    """A start near the solution, which saves about two Newton steps: each w_k solves its own
    equation alone (M̃_kk w_k = w_k^{−1/α}), the best multiple t·w of that (f(t·w) least), then
    one Newton step with the Hessian's diagonal only (kept to at most halving a weight)."""
    power = 1.0 / alpha
    exponent = alpha / (alpha + 1.0)
    w = np.maximum(matrix.diagonal(), tolerance) ** -exponent  # a zero gradient: still finite
    product = matrix @ w
    spread = float(w @ product)  # t solves t·(wᵀM̃w) = t^{−1/α}·Σ w_k^{1−1/α}
    total = len(w) if power == 1.0 else float((w ** (1.0 - power)).sum())
    multiple = (total / max(spread, tolerance)) ** exponent
    w = multiple * w
    target = w**-power
    step = (multiple * product - target) / (matrix.diagonal() + power * target / w)
    fastest = nan_max(map(truediv, step.tolist(), w.tolist()))
    return w - step * min(1.0, 0.5 / fastest) if fastest > 0 else w - step


def _stationary_combination(
    matrix: np.ndarray, w: np.ndarray, tolerance: float
) -> np.ndarray | None:
    """The min-norm convex combination v of the gradients when vᵀM̃v ≤ K·eps (0 is in their
    hull: no solution), else None; only looked for when Σw is large, since a solution has
    (Σw)²·min_v vᵀM̃v ≤ wᵀM̃w = Σ_k w_k^{1−1/α}, which is moderate."""
    if sum(w.tolist()) <= _LARGE_TOTAL * len(w):
        return None
    v = min_norm_weights(matrix)
    return v if float(v @ matrix @ v) <= tolerance else None


def solve_fairgrad(gram: np.ndarray, alpha: float, eps: float) -> tuple[np.ndarray, bool]:
    """(w, True) with M w = w^{−1/α}, or (v, False) with v on the simplex and Jᵀv ≈ 0."""
    num_tasks = len(gram)
    scale = sum(gram.diagonal().tolist()) / num_tasks
    if not (scale > 0 and np.isfinite(gram).all()):
        return np.full(num_tasks, 1.0 / num_tasks), False
    matrix = gram / scale
    magnitude = np.abs(matrix)
    identity = np.eye(num_tasks)
    power = 1.0 / alpha
    tolerance = num_tasks * eps
    point = _evaluate(matrix, magnitude, power, _start(matrix, alpha, tolerance))
    for _ in range(_MAX_STEPS):
        w = point.weights
        if point.error <= _RELATIVE_RESIDUAL:
            stationary = _stationary_combination(matrix, w, tolerance)
            if stationary is not None:  # a residual met only by cancellation (see above)
                return stationary, False
            return w * scale ** (-alpha / (alpha + 1.0)), True
        total = sum(w.tolist())
        if point.quadratic <= tolerance * total * total:  # vᵀM̃v ≤ K·eps for v = w / Σw:
            return w / total, False  # 0 is (numerically) in the convex hull
        # φ''(w_k) = (1/α)·w_k^{−1/α−1}
        curvature = point.target * point.target if power == 1.0 else power * point.target / w
        hessian = matrix + identity * curvature
        newton = lu_solve(hessian, point.residual)  # the step is −newton
        if newton is None:  # pragma: no cover - the Hessian is positive definite
            break
        candidate = None
        if _NEWTON_REACH < point.error <= _CHEBYSHEV_REACH:  # where it saves a step
            candidate = _chebyshev_step(matrix, magnitude, power, point, hessian, newton)
        if candidate is None:
            candidate = _damped_step(matrix, magnitude, power, point, newton)
        if not math.isfinite(candidate.error + candidate.quadratic):
            break  # (a finite error and wᵀM̃w make f finite: w > 0 stays finite)
        if candidate.error > 0.5 * point.error and (candidate.weights == w).all():
            break  # the step is below rounding (a halved error proves that w moved)
        point = candidate
    return point.weights / point.weights.sum(), False


def _chebyshev_step(
    matrix: np.ndarray,
    magnitude: np.ndarray,
    power: float,
    point: _Iterate,
    hessian: np.ndarray,
    newton: np.ndarray,
) -> _Iterate | None:
    """Chebyshev's third-order step w − newton + bend, or None unless it keeps w > 0 and halves
    the residual. The equation's only non-linear term w^{−1/α} is elementwise, so its curvature
    along the Newton step is the vector p(p+1)·w^{−p−2}·newton² (p = 1/α), and
    bend = H⁻¹·(½p(p+1)·w^{−p−2}·newton²) costs one more solve."""
    w = point.weights
    bent = point.target / (w * w) * (newton * newton)
    bend = lu_solve(hessian, bent if power == 1.0 else 0.5 * power * (power + 1.0) * bent)
    if bend is None:  # pragma: no cover - the Hessian is positive definite
        return None
    proposal = w - newton + bend
    if not all(value > 0.0 for value in proposal.tolist()):
        return None
    candidate = _evaluate(matrix, magnitude, power, proposal)
    return candidate if candidate.error <= 0.5 * point.error else None


def _damped_step(
    matrix: np.ndarray, magnitude: np.ndarray, power: float, point: _Iterate, newton: np.ndarray
) -> _Iterate:
    """The point w − s·newton, s the largest of 1, ½, ¼, … (below the step that would take a
    weight to 0) that halves the residual or passes Armijo's test on f."""
    w = point.weights
    fastest = nan_max(map(truediv, newton.tolist(), w.tolist()))  # the fastest decrease
    size = min(1.0, 0.99 / fastest) if fastest > 0 else 1.0  # keeps w > 0
    value = slope = math.nan  # f(w) and ∇f·(−newton), read only for Armijo's test
    while True:
        candidate = _evaluate(
            matrix, magnitude, power, w - size * newton if size < 1.0 else w - newton
        )
        if candidate.error <= 0.5 * point.error or size < 1e-12:
            return candidate
        if math.isnan(value):
            value, slope = _value(point, power), -float(point.residual @ newton)
        if _value(candidate, power) <= value + 1e-4 * size * slope:
            return candidate
        size *= 0.5


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
