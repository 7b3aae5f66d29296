"""Helpers shared by the gradient-surgery methods (PCGrad, GradVac, ConFIG).

These methods only need inner products between task gradients, so they work on the Gram matrix
G = J Jᵀ (K × K, formed once by :func:`mtl_runner.weighting._gram.gram_matrix` with float64
products) and return coefficients: the cost is one O(K²D) product plus O(K³) scalar work in
NumPy or plain Python floats, never O(K²D) per projection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from mtl_runner.weighting._gram import gram_matrix


def scale_free_gram(jacobian: torch.Tensor) -> np.ndarray:
    """G = JJᵀ (products in J's dtype) divided by its largest diagonal entry (unchanged when that
    entry is not a positive number: J = 0, or a gradient overflowed).

    Projection coefficients are invariant to scaling J, so dividing out the scale keeps them
    exact while making every guard relative: J scaled by 1e-8 or 1e8 gives the same result.
    """
    gram = gram_matrix(jacobian)
    largest = gram.diagonal().max()
    return gram / largest if 0.0 < largest < math.inf else gram


def overflowed(gram: np.ndarray) -> bool:
    """A gradient is not finite (the Gram matrix has a NaN or an infinity)."""
    return not np.isfinite(gram).all()


def column_sums(coefficients: Sequence[Sequence[float]]) -> list[float]:
    """c = C.sum(0) for the rows g_i^PC = Σ_k C_ik g_k (the logged weights), as float64."""
    return [sum(column) for column in zip(*coefficients)]


def as_tensor(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """Python floats ([K]) as a tensor on ``like``'s device and in its dtype: one call, and the
    same rounding as converting a float64 array (to nearest)."""
    return torch.tensor(values, dtype=like.dtype, device=like.device)
