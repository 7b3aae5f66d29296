"""Exact small solvers shared by the min-norm family (MGDA, UPGrad, DualProj, CAGrad, Nash-MTL).

Every method of the family reads only the Gram matrix M = J Jᵀ (K × K, K the number of tasks)
and solves a small convex problem on it in float64 with NumPy and LAPACK on the CPU
(:func:`solve_on_gram` forms M in float64 too when the result is near a Pareto-stationary point).
At this size a call's overhead is the cost, so LAPACK is called through SciPy's thin wrappers
rather than numpy.linalg's, and the problems of one method are solved together.
Two of the problems are non-negative quadratic programs, min_{x ≥ 0} ½xᵀQx − bᵀx:

- :func:`min_norm_weights` — argmin_{α∈Δ} αᵀMα (the min-norm point of the convex hull of the
  gradients): with u ≥ 0 free, uᵀ(M + 11ᵀ)u − 2Σu (that is ‖Au‖² + (1 − Σu)² − 1 for AᵀA = M)
  has its minimum at u* = α*/(1 + α*ᵀMα*), so α* = u*/Σu*.
- :func:`dual_cone_projection` — argmin_v vᵀMv subject to v ≥ u (the weights of the projection
  of Jᵀu onto the dual cone of the rows of J): Q = M and b = −Mu for s = v − u ≥ 0.

The default route is :func:`nonnegative_quadratic`, an active-set method on Q itself: from a
guessed support P it solves Q_PP x_P = b_P (x = 0 elsewhere), adds the indices where
the gradient b − Qx is positive and drops those where x_P ≤ 0, until P no longer changes (a
primal-dual active-set method; 1–3 small solves here). P then satisfies the KKT conditions, so x
is the minimiser, exactly up to rounding. Up to four problems are solved one by one with the
bookkeeping on Python floats (at K ≤ 10 a NumPy call costs more than its arithmetic): a support
of one or two by its closed form, a larger one by LAPACK's Cholesky solve; more problems (UPGrad
at K > 4) are solved all at once by NumPy. The result is taken only when Q is well conditioned
(:func:`well_conditioned`: λ_min > 1e-6·λ_max, so the minimiser is unique and every solve on a
support accurate to about 1e-10; one Cholesky factorisation usually settles it). Otherwise
(duplicated or affinely dependent gradients, a zero gradient), or when P has not settled after
a few sweeps (the method can cycle), SciPy's ``nnls`` solves the same problem on a factor A of M
(AᵀA = M by eigendecomposition): the Lawson–Hanson active-set method, which also stops at the
exact KKT point, not at an iteration budget.

Also shared: :func:`solve_on_gram` (the Gram matrix, the solve, and the length of the combined
direction, computed once), :func:`negligible` — whether a combination Σ c_k g_k is below the
rounding error of computing it in the Jacobian's dtype (such a direction is returned as exactly
0: a numerically Pareto-stationary point gives no shared update instead of rounding noise that
conflicts); gradients that overflowed (a non-finite M) get the method's fallback weights and
leave the non-finite update to the trainer's checks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy.linalg import lapack
from scipy.optimize import lsq_linear, nnls

from mtl_runner.errors import ConfigError
from mtl_runner.weighting._checks import require_non_negative
from mtl_runner.weighting._gram import (
    as_weights,
    float_dot,
    gram_matrix,
    precision,
    symmetric_eigenvalues,
    symmetric_eigh,
)
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource

#: a combination shorter than this fraction of Σ|c_k|‖g_k‖ is recomputed from a float64 Gram
_SHORT = 1e-2
#: the active-set result is taken when λ_min(Q) > this·λ_max(Q) (else nnls on a factor)
_WELL_CONDITIONED = 1e-6
#: supports the active-set method tries before nnls takes over (it settles in 1–3 here)
_SWEEPS = 8
#: (b − Qx)_j counts as positive above this times K·max|b| (rounding of the product)
_ROUNDING = 16 * np.finfo(np.float64).eps
#: up to this many problems are solved one by one on Python floats, more at once by NumPy
_FEW_PROBLEMS = 4


class GramSolution(NamedTuple):
    """The weights c solved from M = JJᵀ, M itself, and the length of Σ c_k g_k."""

    weights: np.ndarray
    gram: np.ndarray
    squared_norm: float  # ‖Σ c_k g_k‖² = cᵀMc
    bound: float  # Σ |c_k|·‖g_k‖, which ‖Σ c_k g_k‖ cannot exceed

    def shorter_than(self, fraction: float) -> bool:
        """‖Σ c_k g_k‖ ≤ fraction·Σ|c_k|‖g_k‖ (False when M is NaN)."""
        return self.squared_norm <= (fraction * self.bound) ** 2


def solve_on_gram(
    jacobian: torch.Tensor, solve: Callable[[np.ndarray], np.ndarray], fallback: np.ndarray
) -> GramSolution:
    """The weights solve(M) for M = JJᵀ, or ``fallback`` when M is not finite (overflow).

    M is first formed in the Jacobian's dtype. When the resulting Σ c_k g_k is short (below
    1e-2·Σ|c_k|‖g_k‖: near a Pareto-stationary point, where float32 rounding of M, about 1e-7
    of its entries, would decide the direction) M is formed again in float64 and solved again.
    """
    gram = gram_matrix(jacobian)
    if not np.isfinite(gram).all():
        return measured(fallback, gram)
    solution = measured(solve(gram), gram)
    if jacobian.dtype != torch.float64 and solution.shorter_than(_SHORT):
        gram = gram_matrix(jacobian, exact=True)
        solution = measured(solve(gram), gram)
    return solution


def measured(weights: np.ndarray, gram: np.ndarray) -> GramSolution:
    """The weights with ‖Σ c_k g_k‖² and Σ|c_k|‖g_k‖ computed from the Gram matrix (both NaN
    when a gradient overflowed: a finite diagonal bounds every entry of M)."""
    norms = [math.sqrt(max(square, 0.0)) for square in gram.diagonal().tolist()]  # ‖g_k‖
    bound = sum(abs(c) * norm for c, norm in zip(weights.tolist(), norms))
    # ndarray.dot: M is symmetric, and dot costs half of the @ operator's dispatch at K ≤ 10
    squared_norm = float(weights.dot(gram.dot(weights))) if math.isfinite(bound) else math.nan
    return GramSolution(weights, gram, squared_norm, bound if math.isfinite(bound) else math.nan)


def negligible(solution: GramSolution, dtype: torch.dtype) -> bool:
    """‖Σ c_k g_k‖ ≤ 16·eps(dtype)·Σ|c_k|‖g_k‖: the direction is within its rounding error."""
    return solution.shorter_than(16 * precision(dtype))


def well_conditioned(matrix: np.ndarray) -> bool:
    """λ_min(Q) > 1e-6·λ_max(Q): the active-set result is unique and accurate (see above).

    λ_max ≤ tr Q and 1/λ_min ≤ tr Q⁻¹, so tr Q·tr Q⁻¹ < 1e6 settles it with one Cholesky solve;
    only a matrix that fails that bound (by at most a factor K², or is not positive definite)
    has its eigenvalues computed.
    """
    return _well_conditioned_inverse(matrix)[0]


def _well_conditioned_inverse(matrix: np.ndarray) -> tuple[bool, np.ndarray | None]:
    """:func:`well_conditioned`, and Q⁻¹ from its Cholesky solve (None if Q is not positive
    definite), which a solve on the full support can reuse instead of factorising Q again."""
    _, inverse, info = lapack.dposv(matrix, _identity(len(matrix)))
    if info != 0:
        inverse = None
    elif (
        0
        < sum(matrix.diagonal().tolist()) * sum(inverse.diagonal().tolist())
        < 1 / _WELL_CONDITIONED
    ):
        return True, inverse
    eigenvalues = symmetric_eigenvalues(matrix)  # ascending
    conditioned = eigenvalues is not None and eigenvalues[0] > _WELL_CONDITIONED * eigenvalues[-1]
    return conditioned, inverse


@functools.cache
def _identity(size: int) -> np.ndarray:
    identity = np.eye(size)
    identity.flags.writeable = False  # shared between calls: LAPACK reads a copy
    return identity


def nonnegative_quadratic(
    matrix: np.ndarray, targets: np.ndarray, supports: np.ndarray
) -> np.ndarray | None:
    """X ≥ 0 whose rows x minimise ½xᵀQx − bᵀx for the rows b of ``targets`` ([n, K]), with
    Q = ``matrix`` well conditioned, by the active-set method from the guessed ``supports``
    ([n, K] bool).

    None when they have not settled after _SWEEPS solves (see the module docstring).
    """
    if len(targets) <= _FEW_PROBLEMS:  # one by one on Python floats: fewer NumPy calls
        rows = matrix.tolist()
        solutions = [
            _nonnegative_quadratic_one(matrix, rows, target, support)
            for target, support in zip(targets.tolist(), supports.tolist())
        ]
        return None if None in solutions else np.array(solutions)
    # the rounding of (Qx)_j, below which b − Qx counts as 0
    tolerances = _ROUNDING * len(matrix) * np.abs(targets).max(axis=1, keepdims=True)
    for _ in range(_SWEEPS):
        x = _solve_on_supports(matrix, targets, supports)
        # an index of a support stays while positive (x = 0 exactly off it); a free one joins
        # where the objective falls as it grows: b − Qx > 0
        settled = np.where(supports, x > 0, targets - x @ matrix > tolerances)
        if (settled == supports).all():  # the KKT conditions hold
            return x
        supports = settled
    return None


def _solve_on_supports(matrix: np.ndarray, targets: np.ndarray, supports: np.ndarray) -> np.ndarray:
    """x with Q_PP x_P = b_P on each row's support P and x = 0 elsewhere (Q_PP is PD here):
    all rows at once, with identity rows and columns off each support."""
    systems = np.where(supports[:, :, None] & supports[:, None, :], matrix, _identity(len(matrix)))
    return np.linalg.solve(systems, np.where(supports, targets, 0.0)[..., None])[..., 0]


def _nonnegative_quadratic_one(
    matrix: np.ndarray,
    rows: list[list[float]],
    target: list[float],
    support: list[bool],
    inverse: np.ndarray | None = None,
) -> list[float] | None:
    """:func:`nonnegative_quadratic` for one problem (b = ``target``; ``rows``: Q as lists;
    ``inverse``: Q⁻¹ if already known)."""
    if not any(support) and max(target) <= 0:  # x = 0 already satisfies the KKT conditions
        return [0.0] * len(target)
    tolerance = _ROUNDING * len(target) * max(map(abs, target))
    for _ in range(_SWEEPS):
        x = _solve_on_support(matrix, rows, target, support, inverse)
        settled = [
            value > 0 if inside else goal - float_dot(row, x) > tolerance  # x = 0 off the support
            for value, inside, goal, row in zip(x, support, target, rows)
        ]
        if settled == support:
            return x
        support = settled
    return None


def _solve_on_support(
    matrix: np.ndarray,
    rows: list[list[float]],
    target: list[float],
    support: list[bool],
    inverse: np.ndarray | None = None,
) -> list[float]:
    """x with Q_PP x_P = b_P on the support P and x = 0 elsewhere (Q_PP is PD here); on the
    full support x = Q⁻¹b when ``inverse`` is given."""
    chosen = [j for j, inside in enumerate(support) if inside]
    x = [0.0] * len(target)
    if len(chosen) == 1:
        (a,) = chosen
        x[a] = target[a] / rows[a][a]
    elif len(chosen) == 2:  # Cramer's rule: accurate to cond(Q_PP)·eps like a factorisation
        a, b = chosen
        determinant = rows[a][a] * rows[b][b] - rows[a][b] * rows[b][a]
        x[a] = (rows[b][b] * target[a] - rows[a][b] * target[b]) / determinant
        x[b] = (rows[a][a] * target[b] - rows[b][a] * target[a]) / determinant
    elif len(chosen) == len(target):
        if inverse is not None:  # Q⁻¹b, as accurate as a solve here (Q is well conditioned)
            return inverse.dot(target).tolist()
        # LAPACK's Cholesky solve directly (numpy.linalg's wrapper costs more than the solve)
        return lapack.dposv(matrix, target)[1].tolist()
    elif chosen:
        system = matrix.take(chosen, axis=0).take(chosen, axis=1)
        values = lapack.dposv(system, [target[j] for j in chosen])[1].tolist()
        for j, value in zip(chosen, values):
            x[j] = value
    return x


def psd_factor(gram: np.ndarray) -> np.ndarray:
    """A (r × K) with AᵀA = M up to rounding; eigenvalues below K·eps·λ_max count as zero."""
    eigenvalues, vectors = symmetric_eigh(gram)
    largest = max(float(eigenvalues[-1]), 0.0)
    keep = eigenvalues > gram.shape[0] * np.finfo(np.float64).eps * largest
    if keep.all():  # full rank: the same entries without the boolean indexing
        return (vectors * np.sqrt(eigenvalues)).T
    if not keep.any():
        return np.zeros((1, gram.shape[0]))
    return np.sqrt(eigenvalues[keep])[:, None] * vectors[:, keep].T


def _nnls(matrix: np.ndarray, target: np.ndarray) -> np.ndarray:
    """argmin_{x ≥ 0} ‖matrix·x − target‖ (Lawson–Hanson, exact active set).

    Should it ever run out of iterations (it ends in about K in practice), the bounded-variable
    least-squares solver takes over.
    """
    # the public nnls only: SciPy's private kernel would save ~10 µs but its signature is not
    # stable across the SciPy versions pyproject allows
    maxiter = 50 * matrix.shape[1] + 50
    try:
        return nnls(matrix, target, maxiter=maxiter)[0]
    except RuntimeError:
        pass
    return lsq_linear(matrix, target, bounds=(0.0, np.inf), method="bvls").x


def min_norm_weights(gram: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """α ∈ Δ minimising αᵀMα, exactly (uniform when M = 0, where every α is a minimiser).

    ``start``, the solution of a nearby problem, guesses the support (else all tasks).
    """
    num_tasks = gram.shape[0]
    diagonal = gram.diagonal().tolist()
    scale = max(diagonal)
    if not scale > 0 or not all(map(math.isfinite, diagonal)):
        return np.full(num_tasks, 1.0 / num_tasks)
    gram = gram / scale  # the minimiser does not depend on the scale of M
    lifted = gram + 1.0  # Q = M + 11ᵀ, b = 1
    u = None
    conditioned, inverse = _well_conditioned_inverse(lifted)
    if conditioned:
        support = [True] * num_tasks if start is None else [w > 0 for w in start.tolist()]
        ones = [1.0] * num_tasks
        u = _nonnegative_quadratic_one(lifted, lifted.tolist(), ones, support, inverse)
    if u is None:
        u = _lifted_nnls(gram).tolist()
    total = sum(u)  # > 0: at u = 0 every coordinate's gradient is positive
    return np.array([value / total for value in u])


def _lifted_nnls(gram: np.ndarray) -> np.ndarray:
    """u ≥ 0 minimising ‖Au‖² + (1 − Σu)² (AᵀA = M), by nnls."""
    factor = psd_factor(gram)
    matrix = np.ones((factor.shape[0] + 1, gram.shape[0]))
    matrix[:-1] = factor
    target = np.zeros(matrix.shape[0])
    target[-1] = 1.0
    return _nnls(matrix, target)


def dual_cone_projection(gram: np.ndarray, lowers: np.ndarray) -> np.ndarray:
    """For each row u of ``lowers`` ([n, K]): v minimising vᵀMv subject to v ≥ u (M PSD)."""
    products = lowers @ gram  # Mu: negative where u conflicts with a gradient
    conflicts = products < 0
    if not conflicts.any():  # every Jᵀu is in the dual cone already (s = 0 is optimal)
        return lowers.copy()
    targets = -products  # b = −Mu
    if well_conditioned(gram):
        shifts = nonnegative_quadratic(gram, targets, conflicts)
        if shifts is not None:
            return lowers + shifts
    factor = psd_factor(gram)
    return np.stack([u + _nnls(factor, -factor @ u) if u.any() else u for u in lowers])


def aggregation(weights: np.ndarray, jacobian: torch.Tensor, zero_direction: bool) -> Aggregation:
    """The weights on the Jacobian's device and dtype; an explicit zero direction if asked."""
    tensor = as_weights(weights, jacobian)
    if zero_direction:
        return Aggregation(tensor, torch.zeros_like(jacobian[0]))
    return Aggregation(tensor)


def normalized_gram(gram: np.ndarray, norm_eps: float, reg_eps: float) -> np.ndarray:
    """torchjd's M̃ = M / tr(M) (0 when tr(M) < norm_eps or tr(M) = 0) + reg_eps·I."""
    trace = float(gram.trace())
    scaled = gram / trace if trace > 0 and trace >= norm_eps else np.zeros_like(gram)
    return scaled + reg_eps * np.eye(gram.shape[0]) if reg_eps else scaled


def preference_vector(preference: Sequence[float], num_tasks: int) -> np.ndarray:
    """The preference u (1/K each when empty); one non-negative number per task, not all 0."""
    if len(preference) == 0:
        return np.full(num_tasks, 1.0 / num_tasks)
    values = np.asarray(list(preference), dtype=np.float64)
    if values.shape != (num_tasks,) or not (np.isfinite(values).all() and (values >= 0).all()):
        raise ConfigError(
            f"weighting.preference={list(preference)} is not allowed: give {num_tasks} "
            "non-negative numbers (one per task, in the dataset's task order), or [] for 1/K each"
        )
    if not values.any():
        raise ConfigError(
            f"weighting.preference={list(preference)} is not allowed: at least one must be positive"
        )
    return values


class DualConeWeighting(GradientWeighting):
    """UPGrad and DualProj: projections of preference vectors onto the dual cone of the rows.

    The subclass says which vectors are projected (:meth:`project`); the normalisation of the
    Gram matrix, the options and the exact solve are shared.
    """

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
        solution = solve_on_gram(jacobian, self.weights_from_gram, self.preference)
        return aggregation(solution.weights, jacobian, negligible(solution, jacobian.dtype))

    def weights_from_gram(self, gram: np.ndarray) -> np.ndarray:
        return self.project(normalized_gram(gram, self.norm_eps, self.reg_eps))

    def project(self, scaled_gram: np.ndarray) -> np.ndarray:
        raise NotImplementedError
