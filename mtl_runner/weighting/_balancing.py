"""Helpers shared by the balancing methods (imtl, aligned_mtl, fairgrad, excess_mtl, gradnorm).

The K × K solves run in float64 on the CPU (K is small). The Gram matrix is normalised by its
mean diagonal, so what follows does not depend on the scale of J, and a rank tolerance is taken
from the precision of the Jacobian's own dtype: an eigenvalue of M below λ_max·K·eps(dtype)
counts as zero (the tolerance torchjd uses, with M computed from J in that dtype).
"""

from __future__ import annotations

import torch


def gram_matrix(jacobian: torch.Tensor) -> torch.Tensor:
    """M = J Jᵀ in float64 on the CPU, exactly symmetric."""
    rows = jacobian.detach().to(torch.float64)
    gram = (rows @ rows.T).cpu()
    return 0.5 * (gram + gram.T)


def normalised_gram(jacobian: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(M / s, s) with s = mean_k ‖g_k‖², the mean diagonal of M; s = 0 when J = 0."""
    gram = gram_matrix(jacobian)
    scale = float(torch.diagonal(gram).mean())
    if not scale > 0 or not torch.isfinite(gram).all():
        return torch.zeros_like(gram), 0.0
    return gram / scale, scale


def precision(jacobian: torch.Tensor) -> float:
    """The relative precision eps of the Jacobian's dtype (at least float32's)."""
    dtype = jacobian.dtype if jacobian.dtype.is_floating_point else torch.float32
    return float(torch.finfo(dtype).eps)


def to_weights(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """float64 CPU weights → the Jacobian's device and dtype."""
    return values.to(device=like.device, dtype=like.dtype)
