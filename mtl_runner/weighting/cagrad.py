"""Conflict-Averse Gradient descent (CAGrad).

Paper: B. Liu, X. Liu, X. Jin, P. Stone, Q. Liu, "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS 2021, https://arxiv.org/abs/2110.14048 (Algorithm 1).
Weight: with g₀ = Σ_k g_k / K the mean gradient and c = ``radius_scale``, the update maximises
the worst task's improvement min_k ⟨g_k, d⟩ over the ball ‖d − g₀‖ ≤ c‖g₀‖. Its dual is
w* = argmin_{w∈Δ} ⟨g_w, g₀⟩ + c‖g₀‖·‖g_w‖ with g_w = Σ_k w_k g_k, and then
d = g₀ + λ g_w with λ = c‖g₀‖/‖g_w*‖, divided by 1 + c² (``rescale=squared``). The logged weight
is the effective coefficient c_k = (1/K + λ w*_k)/(1 + c²) (or with divisor 1 + c, or 1), so the
shared parameters move along Σ_k c_k g_k — not the inner simplex weights w*.
The inner problem is solved to machine precision, without the 1e-8 offsets of the official code.
It is convex, so w is optimal where its KKT conditions hold; on a support S they are linear in w
for a given t = ‖g_w‖/(c‖g₀‖), and ‖g_w‖ = t·c‖g₀‖ is then a quadratic in t. The default route
is therefore an active-set method: from the full support, solve one (|S|+1)-sized system and the
quadratic, check the conditions, and move to the support they ask for (usually the first or
second support settles it). Where it does not settle within 8 supports, or the Gram matrix is
ill-conditioned (λ_min < 1e-6·λ_max, e.g. duplicated tasks, where those systems lose accuracy),
a root finder takes over: for a radius r, minimising ⟨g_w, g₀⟩ + c‖g₀‖‖g_w‖²/(2r) over Δ is the
min-norm problem of the shifted gradients g_k + r g₀/(c‖g₀‖) (solved exactly, as for MGDA), and
the optimum is the radius with ‖g_w‖ = r, a monotone one-dimensional root found by steps along
the same quadratics, guarded by bisection. Both agree to ~1e-10 (tested). It is all
scale-invariant (the Gram matrix is divided by its trace first). When ‖g_w*‖ < 1e-4·‖J‖_F (the
hull nearly contains 0 and the optimum sits there) the weights are 0, as in torchjd; when
‖g₀‖ ≤ 1e-12·‖J‖_F or c = 0 they are 1/K (divided by the rescale).
Hyperparameters:
``radius_scale`` (0.5; the paper's c, LibMTL's ``calpha``, torchjd's ``c``) — the radius of the
ball around g₀, as a fraction of ‖g₀‖; 0 gives the mean gradient. The paper's convergence
result needs c < 1; with c ≥ 1 the direction never conflicts with a task (d = 0 is in the ball),
with c < 1 it may (this is why ``non_conflicting`` is False).
``rescale`` (``squared``) — divide d (and the weights) by 1 + c² (``squared``; the official
code's and LibMTL's default rescale=1), by 1 + c (``linear``; rescale=2) or by 1 (``none``;
rescale=0, torchjd).
State: none.
Grad sources: params and features (the method only reads the Gram matrix of its rows).
Other implementations: LibMTL (params only) solves with SciPy's SLSQP from the uniform start and
adds 1e-8 to ‖g₀‖, √φ, ‖g_w‖ and inside the square root, which moves the weights when the Gram
matrix is about 1e-8; it logs the inner w*. torchjd solves the same dual with cvxpy/CLARABEL
(weights exact to about 1e-4), has no rescale (``rescale=none`` gives its weights) and returns
0 weights when ‖g_w*‖ < 1e-4 after dividing the Gram matrix by its trace, or when that trace
is below 1e-4 (an absolute threshold; here there is none). The official code multiplies the
direction by K afterwards "to match the sum loss" (a learning-rate factor, not reproduced).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from enum import Enum
from typing import NamedTuple

import numpy as np
import torch

from mtl_runner.weighting._checks import require_non_negative
from mtl_runner.weighting._gram import float_dot, lu_solve
from mtl_runner.weighting._min_norm import (
    aggregation,
    min_norm_weights,
    solve_on_gram,
    well_conditioned,
)
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource


class CAGradRescale(str, Enum):
    none = "none"
    squared = "squared"
    linear = "linear"


#: below this ‖g_w*‖/‖J‖_F the optimum is taken to be at g_w = 0 (torchjd's norm_eps)
_STATIONARY_NORM = 1e-4
#: below this ‖g₀‖/‖J‖_F the mean gradient counts as 0 (then λ = 0)
_ZERO_MEAN_NORM = 1e-12
#: supports the active-set solve tries before it hands over to the root finder
_SWEEPS = 8
#: up to this many tasks the K × K work runs on Python floats (see _RadiusProblem)
_FLOAT_TASKS = 4
#: the relative rounding of a KKT condition's terms (float64)
_ROUNDING = 16 * np.finfo(np.float64).eps


class CAGrad(GradientWeighting):
    non_conflicting = False  # only for radius_scale >= 1; see the module docstring

    def __init__(
        self,
        task_names: Sequence[str],
        radius_scale: float = 0.5,
        rescale: CAGradRescale = CAGradRescale.squared,
        grad_source: GradSource = GradSource.params,
    ) -> None:
        super().__init__(task_names, grad_source)
        require_non_negative("radius_scale", radius_scale)
        self.radius_scale = float(radius_scale)
        self.rescale = CAGradRescale(rescale)
        self._uniform = np.full(self.num_tasks, 1.0 / self.num_tasks)  # for overflowed gradients

    @property
    def divisor(self) -> float:
        c = self.radius_scale
        return {"none": 1.0, "squared": 1.0 + c * c, "linear": 1.0 + c}[self.rescale.value]

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        weights = solve_on_gram(jacobian, self.weights_from_gram, self._uniform).weights
        return aggregation(weights / self.divisor, jacobian, not weights.any())

    def weights_from_gram(self, gram: np.ndarray) -> np.ndarray:
        """1/K + λ w* before the rescale."""
        return cagrad_weights(gram, self.radius_scale)


def cagrad_weights(gram: np.ndarray, c: float) -> np.ndarray:
    """1/K + λ w* (no rescale), or 0 when the optimum has g_w ≈ 0; see the module docstring.

    For a few tasks the K × K work of the usual case (a well-conditioned M whose optimum keeps
    every task) is done on Python floats around one LAPACK solve: in a training step that costs
    less than the NumPy calls it replaces (about 2% of a K = 3 feature-level step)."""
    num_tasks = gram.shape[0]
    diagonal = gram.diagonal().tolist()
    trace = sum(diagonal)
    if not trace > 0 or c == 0:
        return np.full(num_tasks, 1.0 / num_tasks)
    problem = _RadiusProblem(gram / trace, c)  # ‖J‖_F = 1 from here on: scale-free weights
    if problem.mean_norm <= _ZERO_MEAN_NORM:
        return np.full(num_tasks, 1.0 / num_tasks)
    low = _STATIONARY_NORM
    high = math.sqrt(max(diagonal) / trace)  # ‖g_w‖ ≤ max_k ‖g_k‖ on Δ
    if high <= low:
        return np.zeros(num_tasks)
    found = _active_set(problem, high) if problem.well_conditioned() else None
    if found is None:
        w = problem.inner(low)
        if problem.norm(w) / low <= 1.0:  # the root is below 1e-4: the optimum has g_w* ≈ 0
            return np.zeros(num_tasks)
        w, norm = _root(problem, low, high, w, guess=min(max(problem.mean_norm, low), high))
        found = w.tolist(), norm
    w, norm = found
    if norm < _STATIONARY_NORM:
        return np.zeros(num_tasks)
    scale = problem.ball / norm
    return np.array([1.0 / num_tasks + scale * value for value in w])


class _RadiusProblem:
    """The inner problem of a radius r: the min-norm point of g_k + (r/(c‖g₀‖))·g₀ (M̃ = M/tr M)."""

    def __init__(self, gram: np.ndarray, c: float) -> None:
        self.gram = gram
        count = len(gram)
        # M̃ as Python floats for a few tasks (None: NumPy, whose calls cost less from about
        # K = 5 on; the float work grows as K²)
        self.rows = gram.tolist() if count <= _FLOAT_TASKS else None
        if self.rows is None:
            self.products = gram.mean(axis=1).tolist()  # b_k = ⟨g_k, g₀⟩
        else:
            self.products = [sum(row) / count for row in self.rows]
        self.mean_norm = math.sqrt(max(sum(self.products) / count, 0.0))  # ‖g₀‖
        self.ball = c * self.mean_norm  # √φ = c‖g₀‖, the radius of the ball around g₀

    @functools.cached_property
    def mean_products(self) -> np.ndarray:
        """b as an array (the slack of a partial support, and the root finder)."""
        return np.array(self.products)

    @functools.cached_property
    def cross(self) -> np.ndarray:
        """b_i + b_j (only the root finder shifts the gradients)."""
        return np.add.outer(self.mean_products, self.mean_products)

    def inner(self, radius: float, start: np.ndarray | None = None) -> np.ndarray:
        """w(r); ``start``, the solution at a nearby radius, guesses its support."""
        t = radius / self.ball  # the shift g_k → g_k + t g₀
        shifted = self.gram + t * self.cross + (t * self.mean_norm) ** 2
        return min_norm_weights(shifted, start)

    def norm(self, w: np.ndarray) -> float:
        return math.sqrt(max(float(w @ self.gram @ w), 0.0))  # ‖g_w‖

    def well_conditioned(self) -> bool:
        """λ_min(M̃) > 1e-6·λ_max(M̃), MGDA's test: then every support's system is accurate
        (the eigenvalues of M̃_SS lie between those of M̃)."""
        return well_conditioned(self.gram)

    def piece(self, support: np.ndarray | None) -> _Piece | None:
        """On ``support`` S, the KKT system [[M_SS, 1], [1ᵀ, 0]]·[w_S; ν] = [−t·b_S; 1] of the
        radius r = t·ball has the solution p + t·q; with ‖g_w‖ = r it fixes t (a quadratic).
        None when the system is singular (affinely dependent gradients on S). ``support``
        None is every task (the usual optimum: no principal submatrix to take)."""
        kkt, rhs, rows = self._kkt(support)
        solution = lu_solve(kkt, rhs)
        if solution is None:
            return None
        size = len(kkt) - 1
        p, q = zip(*solution[:size].tolist())  # the columns p and q (of w_S)
        if rows is None:
            directions = solution[:size]
            (a, b), (_, c2) = (directions.T @ kkt[:size, :size] @ directions).tolist()
        else:
            a, b = _quadratic_form(rows, p, p), _quadratic_form(rows, p, q)
            c2 = _quadratic_form(rows, q, q)
        # ‖p + t q‖²_M = (t·ball)²: (c2 − ball²) t² + 2 b t + a = 0
        ball = self.ball
        roots = sorted(t for t in _quadratic_roots(c2 - ball * ball, b, a) if t > 0)
        return _Piece(support, solution, roots, p, q)

    def _kkt(
        self, support: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, list[list[float]] | None]:
        """The system [[M_SS, 1], [1ᵀ, 0]], its right-hand sides [0, −b_S; 1, 0], and M_SS as
        Python floats on the few-task route (None on NumPy's)."""
        if self.rows is None:
            full = support is None
            size = len(self.gram) if full else int(np.count_nonzero(support))
            kkt = np.ones((size + 1, size + 1))
            kkt[:size, :size] = self.gram if full else _principal(self.gram, support)
            kkt[size, size] = 0.0
            rhs = np.zeros((size + 1, 2))
            rhs[size, 0] = 1.0
            rhs[:size, 1] = -self.mean_products if full else -self.mean_products[support]
            return kkt, rhs, None
        rows, products = self.rows, self.products
        if support is not None:
            chosen = support.nonzero()[0].tolist()
            rows = [[rows[i][j] for j in chosen] for i in chosen]
            products = [products[i] for i in chosen]
        kkt = np.array([[*row, 1.0] for row in rows] + [[1.0] * len(rows) + [0.0]])
        return kkt, np.array([[0.0, -b] for b in products] + [[1.0, 0.0]]), rows

    def piece_root(self, w: np.ndarray) -> float:
        """The radius where ‖g_w‖ = r if the support of w stays."""
        piece = self.piece(w > 0)
        if piece is None:  # affinely dependent gradients on the support: no piece to follow
            return float("nan")
        return piece.roots[0] * self.ball if piece.roots else float("nan")


def _principal(matrix: np.ndarray, support: np.ndarray) -> np.ndarray:
    return matrix.compress(support, axis=0).compress(support, axis=1)


def _quadratic_form(
    rows: list[list[float]], left: Sequence[float], right: Sequence[float]
) -> float:
    """leftᵀ M right for M given by its rows (Python floats)."""
    return float_dot(left, [float_dot(row, right) for row in rows])


class _Piece(NamedTuple):
    """The solutions on one support: [w_S; ν] = columns[:, 0] + t·columns[:, 1]."""

    support: np.ndarray | None  # None: every task
    columns: np.ndarray
    roots: list[float]  # the t > 0 with ‖g_w‖ = t·ball, ascending
    p: Sequence[float]  # w_S = p + t·q: the first two columns without ν, as Python floats
    q: Sequence[float]

    def at(self, t: float) -> tuple[np.ndarray, float]:
        """w (all K entries, 0 off the support) and ν at t."""
        values = self.columns[:, 0] + t * self.columns[:, 1]
        if self.support is None:
            return values[:-1], float(values[-1])
        w = np.zeros(len(self.support))
        w[self.support] = values[:-1]
        return w, float(values[-1])


def _settled(problem: _RadiusProblem, piece: _Piece, t: float) -> tuple[np.ndarray, np.ndarray]:
    """w at t, and the support its conditions ask for: its positive weights and the tasks off
    the support whose condition fails."""
    w, nu = piece.at(t)
    if piece.support is None:  # no task off the support: only the signs of w can fail
        return w, w > 0
    products = problem.mean_products
    slack = problem.gram @ w + t * products + nu  # 0 on the support, ≥ 0 off it at the optimum
    tolerance = _ROUNDING * len(w) * (1.0 + t * float(np.abs(products).max()) + abs(nu))
    return w, (w > 0) | (~piece.support & (slack < -tolerance))


def _active_set(problem: _RadiusProblem, high: float) -> tuple[list[float], float] | None:
    """w* and ‖g_w*‖ from the KKT conditions on a guessed support, or None when the guesses
    do not settle within _SWEEPS supports (the caller then finds the root by bisection).

    The inner objective f(w) = ⟨g_w, g₀⟩ + ball·‖g_w‖ is convex, so w ∈ Δ is optimal where, with
    t = ‖g_w‖/ball, each (M̃w)_k + t·b_k + ν is 0 on the support and ≥ 0 off it. From the full
    support, each step keeps the positive weights and adds the tasks whose condition fails.
    ``high`` bounds the radius: ‖g_w‖ ≤ max_k ‖g_k‖ on Δ.
    """
    support = None  # every task
    farthest = high / problem.ball
    for _ in range(_SWEEPS):
        piece = problem.piece(support)
        if piece is None:
            return None
        if support is None:  # no task off the support: optimal where every weight is positive
            for t in piece.roots:
                w = [p + t * q for p, q in zip(piece.p, piece.q)]
                if all(value > 0 for value in w):
                    return w, t * problem.ball
        guesses = [_settled(problem, piece, t) for t in piece.roots]  # both may be positive
        for t, (w, settled) in zip(piece.roots, guesses):
            if support is not None and (settled == support).all():  # optimal
                return w.tolist(), t * problem.ball
        # the next support: from the smaller radius (as the root finder's piece); where no
        # radius solves this support's equation, ‖g_w‖ > r all along the piece (its quadratic
        # is ‖p‖² > 0 at t = 0), so the root lies further out: from the largest radius
        support = guesses[0][1] if guesses else _settled(problem, piece, farthest)[1]
        if not support.any():
            return None
    return None


def _quadratic_roots(a: float, half_b: float, c: float) -> list[float]:
    """The real roots of a·t² + 2·half_b·t + c = 0 (numerically stable form; a linear or
    constant equation when a = 0)."""
    if a == 0:
        return [-c / (2 * half_b)] if half_b != 0 else []
    discriminant = half_b * half_b - a * c
    if discriminant < 0:
        return []
    q = -(half_b + math.copysign(math.sqrt(discriminant), half_b))  # no cancellation
    if q == 0:
        return [0.0]
    return [q / a, c / q]


def _root(
    problem: _RadiusProblem, low: float, high: float, w: np.ndarray, guess: float
) -> tuple[np.ndarray, float]:
    """w = inner(r) and ‖g_w‖ at the radius r in (low, high] where ‖g_w‖ = r, from
    w = inner(low) (where ‖g_w‖ > low) and a first guess of r.

    Each step takes the root of the piece of the current support (a quadratic: exact when the
    support stays there); a root outside the bracket, or no progress, falls back to the guess,
    then to bisection. It ends in a few steps.
    """
    radius = low
    for _ in range(200):
        piece = problem.piece_root(w)
        radius = piece if low < piece < high and piece != radius else guess
        w = problem.inner(radius, w)
        norm = problem.norm(w)
        excess = norm / radius - 1.0  # decreasing in r
        if abs(excess) <= 1e-14:
            break
        if excess > 0:
            low = radius
        else:
            high = radius
        if high - low <= 1e-15 * high:
            break
        guess = 0.5 * (low + high)
    return w, norm
