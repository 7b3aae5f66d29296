"""Helpers shared by the balancing methods (imtl, aligned_mtl, fairgrad).

They read the Gram matrix M = J Jᵀ of ``_gram.gram_matrix(jacobian)`` (the products formed in
the Jacobian's dtype, as torchjd does, held in float64) and do the K × K work in NumPy. A
spectrum is taken of M divided by its largest diagonal entry, so what follows does not depend on
the scale of J, and a rank tolerance is taken from the precision of the Jacobian's own dtype: an
eigenvalue of M below λ_max·K·eps(dtype) counts as zero (the tolerance torchjd uses, with M
computed from J in that dtype).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mtl_runner.weighting._gram import symmetric_eigh


class Spectrum(NamedTuple):
    """The eigendecomposition of M / s, s = max_k M_kk, and how many eigenvalues count as zero."""

    eigenvalues: np.ndarray  # ascending
    vectors: np.ndarray  # orthonormal, one per column
    dropped: int  # the first ones, at most λ_max·K·eps: V[:, dropped:] spans the range of M
    scale: float  # s


def spectrum(gram: np.ndarray, eps: float) -> Spectrum | None:
    """The spectrum of a float64 Gram matrix; None when no gradient is nonzero and finite."""
    scale = float(gram.diagonal().max())
    if not 0.0 < scale < math.inf:  # every gradient is zero, or one overflowed (inf or NaN)
        return None
    eigenvalues, vectors = symmetric_eigh(gram / scale)
    dropped = int(eigenvalues.searchsorted(eigenvalues[-1] * len(gram) * eps, side="right"))
    return Spectrum(eigenvalues, vectors, dropped, scale)
