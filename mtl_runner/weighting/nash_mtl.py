"""Nash-MTL: multi-task learning as a bargaining game (Nash-MTL).

Paper: A. Navon, A. Shamsian, I. Achituve, H. Maron, K. Kawaguchi, G. Chechik, E. Fetaya,
"Multi-Task Learning as a Bargaining Game", ICML 2022, https://arxiv.org/abs/2202.01017
(Algorithm 1).
Weight: α > 0 with α_k (Mα)_k = 1 for every k (M = JJᵀ; the Nash bargaining solution,
d = Σ_k α_k g_k), then the norm clipping folded into the weights: if ‖Σ_k α_k g_k‖ > max_norm,
α ← α·max_norm/‖Σ_k α_k g_k‖. The logged c_k is that clipped α_k, and the shared parameters
(and, with this project's head convention, head k scaled by c_k) move along Σ_k c_k g_k. At the
solution ‖Σ α_k g_k‖² = Σ α_k (Mα)_k = K, so the default max_norm = 1 always scales α by 1/√K.
The condition is the stationarity condition of the strictly convex ½αᵀMα − Σ log α_k; it is
solved to ~1e-12 by damped Newton steps in float64 (from the previous α), not by the official
sequential convex program (cvxpy + ECOS, at most 20 solves, stopping at a residual of 1e-3),
which approximates the same condition. A solution exists exactly when 0 is not in the convex
hull of the gradients (the point is not Pareto-stationary); it then never conflicts with a task,
since (Mα)_k = 1/α_k > 0. When it does not exist (0 in the hull; e.g. a rank-1 Jacobian with
gradients of both signs, or a zero gradient), or Newton does not converge in 100 steps, the
previous α is used again, as the official code does when its solver fails; that direction may
conflict, so ``non_conflicting`` is False.
Hyperparameters:
``update_weights_every`` (1) — solve for α every this many steps, reuse it in between (the
clipping is recomputed on every step with the current gradients).
``max_norm`` (1.0) — the clipping bound on ‖Σ_k α_k g_k‖; 0 disables it. With grad_source
features the norm is that of the gradient with respect to the batch's representation.
State: the last solved α (before clipping; ones before the first solve) and the step count.
Grad sources: params and features (the method only reads the Gram matrix of its rows).
Other implementations: LibMTL (params only) solves as the official code, logs the unclipped α,
backpropagates Σ α_k L_k (heads weighted by α) and then clips the shared parameters' gradient
with clip_grad_norm_(max_norm), leaving the heads unclipped. torchjd's private
_NashMTLWeighting uses the same solver and folds the clipping into the weights as here (its
heads get unweighted gradients). Both fall back to the previous α when the solver raises.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mtl_runner.weighting._checks import require
from mtl_runner.weighting._gram import float_dot, gram_matrix, lu_solve, nan_max
from mtl_runner.weighting._min_norm import GramSolution, aggregation, measured, solve_on_gram
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource

_NEWTON_STEPS = 100
_RESIDUAL = 1e-12  # max_k |α_k (Mα)_k − 1| at which Newton stops
_DECREMENT = 1e-14  # Newton decrement at which it stops (rounding noise)
_ACCEPTED_RESIDUAL = 1e-6  # the largest residual taken as a solution


class NashMTL(GradientWeighting):
    non_conflicting = False  # the fallback to the previous α may conflict; see the docstring

    def __init__(
        self,
        task_names: Sequence[str],
        update_weights_every: int = 1,
        max_norm: float = 1.0,
        grad_source: GradSource = GradSource.params,
    ) -> None:
        super().__init__(task_names, grad_source)
        require(
            update_weights_every >= 1,
            "update_weights_every",
            update_weights_every,
            "it must be an integer >= 1",
        )
        require(
            max_norm >= 0 and math.isfinite(max_norm),
            "max_norm",
            max_norm,
            "it must be a number >= 0 (0 disables the clipping)",
        )
        self.update_weights_every = int(update_weights_every)
        self.max_norm = float(max_norm)
        self._alpha = np.ones(self.num_tasks)  # the last solution, before clipping
        self._step = 0

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        solving = self._step % self.update_weights_every == 0
        self._step += 1
        if solving:
            solution = solve_on_gram(jacobian, self.solve, self._alpha)
            self._alpha = solution.weights
        elif self.max_norm > 0:  # the clipping needs ‖Σ α_k g_k‖ with the current gradients
            solution = measured(self._alpha, gram_matrix(jacobian))
        else:
            return aggregation(self._alpha, jacobian, False)
        return aggregation(self.clipped(solution), jacobian, False)

    def solve(self, gram: np.ndarray) -> np.ndarray:
        """The bargaining solution, or the previous α when there is none."""
        solution = bargaining_solution(gram, self._alpha)
        return self._alpha if solution is None else solution

    def clipped(self, solution: GramSolution) -> np.ndarray:
        """α scaled down to ‖Σ α_k g_k‖ = max_norm when it is longer (max_norm > 0)."""
        norm = math.sqrt(max(solution.squared_norm, 0.0))
        if self.max_norm > 0 and norm > self.max_norm:  # NaN (overflowed gradients) does not clip
            return solution.weights * (self.max_norm / norm)
        return solution.weights

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": torch.from_numpy(self._alpha.copy()), "step": self._step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._alpha = torch.as_tensor(state["alpha"], dtype=torch.float64).numpy().copy()
        self._step = int(state["step"])


def bargaining_solution(gram: np.ndarray, start: np.ndarray) -> np.ndarray | None:
    """α > 0 with α_k (Mα)_k = 1 for all k (to 1e-6 at worst, ~1e-12 unless M is nearly
    singular), or None when there is none or Newton does not get there in 100 steps.

    Damped Newton on f(α) = ½αᵀM̃α − Σ log α_k with M̃ = M / tr(M) (self-concordant, so the
    step 1/(1 + Newton decrement) keeps α > 0 and decreases f); α = α̃ / √tr(M) at the end.
    """
    trace = sum(gram.diagonal().tolist())  # (Python's sum: NumPy reductions cost more at K ≤ 10)
    if not trace > 0:
        return None
    scaled = gram / trace
    root = math.sqrt(trace)
    # the vectors are Python floats (the same IEEE arithmetic): at K ≤ 10 a NumPy call costs
    # more than its arithmetic; NumPy does only the products with M̃ and LAPACK the solve
    x = [value * root for value in start.tolist()]  # the previous solution in the scaled units
    if not _finite_positive(x):
        x = [1.0] * len(x)
    product = scaled.dot(x).tolist()
    curvature = float_dot(x, product)
    if curvature > 0:  # the best multiple of the start: Σ x_k (M̃x)_k = K
        multiple = math.sqrt(len(x) / curvature)
        x, product = [v * multiple for v in x], [v * multiple for v in product]
    best, best_residual = x, math.inf
    for _ in range(_NEWTON_STEPS):
        residual = _largest_gap([a * b for a, b in zip(x, product)])
        if residual < best_residual:
            best, best_residual = x, residual
        if residual <= _RESIDUAL:
            break
        inverse = [1.0 / value for value in x]
        descent = [a - b for a, b in zip(inverse, product)]  # −∇f
        hessian = scaled + np.diag([value * value for value in inverse])
        step = lu_solve(hessian, descent)
        if step is None:  # singular
            break
        step = step.tolist()
        decrement = math.sqrt(max(float_dot(descent, step), 0.0))
        if decrement <= _DECREMENT:  # at the rounding floor: no step can do better
            break
        damping = 1.0 + decrement if decrement > 0.25 else 1.0
        x = [a + b / damping for a, b in zip(x, step)]
        if not _finite_positive(x):
            break
        product = scaled.dot(x).tolist()
    if best_residual <= _ACCEPTED_RESIDUAL:
        return np.array([value / root for value in best])
    return None


def _finite_positive(x: Sequence[float]) -> bool:
    return all(0.0 < value < math.inf for value in x)  # False with a NaN


def _largest_gap(balance: Sequence[float] | np.ndarray) -> float:
    """max_k |balance_k − 1| (NaN if any is NaN)."""
    values = balance.tolist() if isinstance(balance, np.ndarray) else balance
    return nan_max(abs(value - 1.0) for value in values)
