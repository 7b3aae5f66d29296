"""Exact small solvers shared by the min-norm family (MGDA, UPGrad, DualProj, CAGrad, Nash-MTL).

Every method of the family reads only the Gram matrix M = J Jᵀ (K × K, K the number of tasks)
and solves a small convex problem on it in float64 with NumPy/SciPy on the CPU
(:func:`solve_on_gram` forms M in float64 too when the result is near a Pareto-stationary point):

- :func:`min_norm_weights` — argmin_{α∈Δ} αᵀMα (the min-norm point of the convex hull of the
  gradients), exactly, by non-negative least squares: with u ≥ 0 free, ‖Au‖² + (1 − Σu)² for
  AᵀA = M has its minimum at u* = α*/(1 + α*ᵀMα*), so α* = u*/Σu*. SciPy's ``nnls`` is the
  Lawson–Hanson active-set method: it stops at the exact KKT point, not at an iteration budget.
- :func:`dual_cone_projection` — argmin_v vᵀMv subject to v ≥ u (the weights of the projection of
  Jᵀu onto the dual cone of the rows of J), by the same solver on s = v − u ≥ 0.
- :func:`not_finite` — gradients that overflowed; the methods then return finite (uniform)
  weights and leave the non-finite update to the trainer's checks.
- :func:`negligible` — whether a combination Σ c_k g_k is below the rounding error of computing
  it in the Jacobian's dtype; such a direction is returned as exactly 0 (a numerically
  Pareto-stationary point gives no shared update instead of rounding noise that conflicts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.optimize import lsq_linear, nnls

from mtl_runner.errors import ConfigError
from mtl_runner.weighting._checks import require_non_negative
from mtl_runner.weighting._gram import as_weights, gram_matrix
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource

#: a combination shorter than this fraction of Σ|c_k|‖g_k‖ is recomputed from a float64 Gram
_SHORT = 1e-2


def solve_on_gram(
    jacobian: torch.Tensor, solve: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(weights, M) with weights = solve(M), M = JJᵀ.

    M is first formed in the Jacobian's dtype. When the resulting Σ c_k g_k is short (below
    1e-2·Σ|c_k|‖g_k‖: near a Pareto-stationary point, where float32 rounding of M, about 1e-7
    of its entries, would decide the direction) M is formed again in float64 and solved again.
    """
    gram = gram_matrix(jacobian)
    weights = solve(gram)
    if jacobian.dtype != torch.float64 and not not_finite(gram) and short(weights, gram, _SHORT):
        gram = gram_matrix(jacobian, exact=True)
        weights = solve(gram)
    return weights, gram


def psd_factor(gram: np.ndarray) -> np.ndarray:
    """A (r × K) with AᵀA = M up to rounding; eigenvalues below K·eps·λ_max count as zero."""
    eigenvalues, vectors = np.linalg.eigh(gram)
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


def min_norm_weights(gram: np.ndarray) -> np.ndarray:
    """α ∈ Δ minimising αᵀMα, exactly (uniform when M = 0, where every α is a minimiser)."""
    num_tasks = gram.shape[0]
    scale = float(gram.diagonal().max())
    if not scale > 0 or not np.isfinite(scale):
        return np.full(num_tasks, 1.0 / num_tasks)
    factor = psd_factor(gram / scale)  # the minimiser does not depend on the scale of M
    matrix = np.ones((factor.shape[0] + 1, num_tasks))
    matrix[:-1] = factor
    target = np.zeros(matrix.shape[0])
    target[-1] = 1.0
    u = _nnls(matrix, target)
    return u / u.sum()  # Σu > 0: at u = 0 every coordinate's gradient is positive


def dual_cone_projection(gram: np.ndarray, lowers: np.ndarray) -> np.ndarray:
    """For each row u of ``lowers`` ([n, K]): v minimising vᵀMv subject to v ≥ u (M PSD)."""
    factor = psd_factor(gram)
    return np.stack([u + _nnls(factor, -factor @ u) if u.any() else u for u in lowers])


def not_finite(gram: np.ndarray) -> bool:
    """True when the Gram matrix has a NaN or infinity (the gradients overflowed)."""
    return not np.isfinite(gram).all()


def short(weights: np.ndarray, gram: np.ndarray, fraction: float) -> bool:
    """‖Σ c_k g_k‖ ≤ fraction·Σ|c_k|‖g_k‖ (computed from the Gram matrix)."""
    squared_norm = float(weights @ gram @ weights)
    bound = float(np.abs(weights) @ np.sqrt(np.maximum(gram.diagonal(), 0.0)))
    return squared_norm <= (fraction * bound) ** 2


def negligible(weights: np.ndarray, gram: np.ndarray, dtype: torch.dtype) -> bool:
    """‖Σ c_k g_k‖ ≤ 16·eps(dtype)·Σ|c_k|‖g_k‖: the direction is within its rounding error."""
    return short(weights, gram, 16 * torch.finfo(dtype).eps)


def aggregation(weights: np.ndarray, jacobian: torch.Tensor, zero_direction: bool) -> Aggregation:
    """The weights on the Jacobian's device and dtype; an explicit zero direction if asked."""
    tensor = as_weights(weights, jacobian)
    if zero_direction:
        return Aggregation(tensor, torch.zeros_like(jacobian[0]))
    return Aggregation(tensor)


def normalized_gram(gram: np.ndarray, norm_eps: float, reg_eps: float) -> np.ndarray:
    """torchjd's M̃ = M / tr(M) (0 when tr(M) < norm_eps or tr(M) = 0) + reg_eps·I."""
    trace = float(np.trace(gram))
    scaled = gram / trace if trace > 0 and trace >= norm_eps else np.zeros_like(gram)
    return scaled + reg_eps * np.eye(gram.shape[0])


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
        weights, gram = solve_on_gram(jacobian, self.weights_from_gram)
        return aggregation(weights, jacobian, negligible(weights, gram, jacobian.dtype))

    def weights_from_gram(self, gram: np.ndarray) -> np.ndarray:
        if not_finite(gram):
            return self.preference
        return self.project(normalized_gram(gram, self.norm_eps, self.reg_eps))

    def project(self, scaled_gram: np.ndarray) -> np.ndarray:
        raise NotImplementedError
