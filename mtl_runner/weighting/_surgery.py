"""Helpers shared by the gradient-surgery methods (PCGrad, GradVac, ConFIG).

These methods only need inner products between task gradients, so they work on the Gram matrix
G = J Jᵀ (K × K) and return coefficients: the cost is one O(K²D) product plus O(K³) scalar work,
never O(K²D) per projection.
"""

from __future__ import annotations

import torch

# columns per float64 block when the Jacobian is not float64 (bounds the temporary copy)
_BLOCK = 1 << 18


def gram_matrix(jacobian: torch.Tensor) -> torch.Tensor:
    """G = J Jᵀ accumulated in float64 (in blocks of columns), returned on the CPU."""
    if jacobian.dtype == torch.float64:
        return (jacobian @ jacobian.T).cpu()
    num_tasks, width = jacobian.shape
    gram = torch.zeros(num_tasks, num_tasks, dtype=torch.float64, device=jacobian.device)
    for start in range(0, width, _BLOCK):
        block = jacobian[:, start : start + _BLOCK].double()
        gram += block @ block.T
    return gram.cpu()


def scale_free_gram(jacobian: torch.Tensor) -> torch.Tensor:
    """The Gram matrix divided by its largest diagonal entry (unchanged when J = 0).

    Projection coefficients are invariant to scaling J, so dividing out the scale keeps them
    exact while making every guard relative: J scaled by 1e-8 or 1e8 gives the same result.
    """
    gram = gram_matrix(jacobian)
    largest = gram.diagonal().max()
    return gram / largest if largest > 0 else gram


def to_weights(coefficients: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Coefficients as weights on the Jacobian's device and in its dtype."""
    return coefficients.to(device=like.device, dtype=like.dtype)
