"""The Gram matrix M = J Jᵀ, the K × K linear algebra on it, and the way back to torch: what
every gradient method shares.

Every Gram-based method (the min-norm family, the balancing and the surgery methods) reads only
the K × K inner products of the task gradients. They are formed here once (one matmul, or the
K(K+1)/2 dot products of a few host rows) and handed over as a symmetric float64 NumPy array:
the K × K work that follows costs about 1 µs a NumPy call against 5–10 µs a torch call on small
tensors, which is what keeps a method's solve a small share of a training step
(benchmarks/gradient_methods.py). At K ≤ 10 numpy.linalg's wrappers cost several times the
LAPACK routine they call, so the decompositions below call the same routines (dsyevd, dgesv)
through SciPy's thin wrappers: the same results, a fraction of the time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from scipy.linalg import lapack

#: columns of J turned to float64 at a time for an exact Gram matrix (bounds the temporary copy)
_BLOCK_ELEMENTS = 1 << 24
#: up to this many tasks (and this many entries of J) the Gram matrix is taken as K(K+1)/2 dot
#: products of host rows: at K ≤ 4 they cost about half of one torch matmul and its conversion
#: (benchmarks/gradient_methods.py, where the feature-level Jacobian is 3 × 8192); beyond that,
#: or for a large J, the matmul reads J once and uses every thread
_DOT_TASKS = 4
_DOT_ELEMENTS = 1 << 18


def gram_matrix(jacobian: torch.Tensor, exact: bool = False) -> np.ndarray:
    """M = J Jᵀ as a symmetric float64 NumPy array (on the host).

    By default the products are taken in the Jacobian's dtype (one matmul, or K(K+1)/2 dot
    products for a few host rows); with ``exact`` in float64, over blocks of columns so that the
    float64 copy of J stays small.
    """
    if jacobian.requires_grad:
        jacobian = jacobian.detach()
    if not exact and _few_host_rows(jacobian):
        return _dot_gram(jacobian.numpy())
    if exact and jacobian.dtype != torch.float64:
        gram = _float64_gram(jacobian)
    else:
        gram = jacobian @ jacobian.T
    if not gram.is_cpu or gram.dtype not in (torch.float32, torch.float64):
        gram = gram.to(torch.float64).cpu()
    gram = gram.numpy()
    # float32 entries are widened exactly before the float64 sum (as astype would): one call
    symmetric = np.add(gram, gram.T, dtype=np.float64)
    symmetric *= 0.5
    return symmetric


def _few_host_rows(jacobian: torch.Tensor) -> bool:
    num_tasks, width = jacobian.shape
    return (
        num_tasks <= _DOT_TASKS
        and num_tasks * width <= _DOT_ELEMENTS
        and jacobian.is_cpu
        and jacobian.dtype in (torch.float32, torch.float64)
    )


def _dot_gram(rows: np.ndarray) -> np.ndarray:
    """M from the dot products of the rows (each taken once: M is symmetric by construction),
    accumulated in the rows' dtype as a matmul would."""
    count = len(rows)
    gram = [[0.0] * count for _ in range(count)]
    for i in range(count):
        for j in range(i, count):
            gram[i][j] = gram[j][i] = float(rows[i].dot(rows[j]))
    return np.array(gram)


def _float64_gram(jacobian: torch.Tensor) -> torch.Tensor:
    num_tasks, width = jacobian.shape
    block = max(1, _BLOCK_ELEMENTS // max(num_tasks, 1))
    if width <= block:  # the usual case: one float64 copy, one product
        part = jacobian.to(torch.float64)
        return part @ part.T
    gram = torch.zeros(num_tasks, num_tasks, dtype=torch.float64, device=jacobian.device)
    for start in range(0, width, block):  # a handful of blocks, not a loop over D
        part = jacobian[:, start : start + block].to(torch.float64)
        gram += part @ part.T
    return gram


@functools.cache
def precision(dtype: torch.dtype) -> float:
    """The relative precision eps of a dtype (float32's for a non-float one); cached, since
    torch.finfo costs a few µs a call."""
    return float(torch.finfo(dtype if dtype.is_floating_point else torch.float32).eps)


def as_weights(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Host float64 values ([K]) as a tensor on ``like``'s device and in its dtype."""
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)).to(
        like.device, like.dtype
    )


def symmetric_eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending eigenvalues and orthonormal eigenvectors (columns) of a symmetric float64
    matrix, as numpy.linalg.eigh."""
    eigenvalues, vectors, info = lapack.dsyevd(matrix, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"the eigendecomposition did not converge (dsyevd info={info})")
    return eigenvalues, vectors


def symmetric_eigenvalues(matrix: np.ndarray) -> np.ndarray | None:
    """Ascending eigenvalues of a symmetric float64 matrix; None if LAPACK did not converge."""
    eigenvalues, _, info = lapack.dsyevd(matrix, compute_v=0)
    return None if info else eigenvalues


def float_dot(left: Sequence[float], right: Sequence[float]) -> float:
    """Σ a_k b_k of Python floats: for K ≤ 10 numbers a NumPy call costs more than the sum."""
    return sum([a * b for a, b in zip(left, right)])


def nan_max(values: Iterable[float]) -> float:
    """The largest of some Python floats, NaN if any is NaN (Python's ``max`` silently drops a
    NaN that is not first); cheaper than NumPy's reductions on K ≤ 10 numbers."""
    values = list(values)
    return math.nan if any(map(math.isnan, values)) else max(values)


def lu_solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray | None:
    """matrix⁻¹·rhs by LU with partial pivoting, as numpy.linalg.solve; None when singular."""
    _, _, solution, info = lapack.dgesv(matrix, rhs)
    return None if info else solution
