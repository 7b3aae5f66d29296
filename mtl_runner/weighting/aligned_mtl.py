"""Aligned multi-task learning (Aligned-MTL).

Paper: D. Senushkin, N. Patakin, A. Kuznetsov, A. Konushin, "Independent Component Alignment for
Multi-Task Learning", CVPR 2023, https://arxiv.org/abs/2305.19000 (Algorithm 1).
Weight: with M = J Jᵀ = V Λ Vᵀ (eigenvalues below λ_max·K·eps, eps of J's dtype, count as zero
and are dropped with their eigenvectors), the balance transformation is
B = √σ · V_r Λ_r^{-1/2} V_rᵀ, and the logged weight is α = B·p, so the shared parameters move
along d = Σ_k α_k g_k: the gradient matrix with all its singular values set to √σ (an aligned,
well-conditioned system), times the preference p. p = 𝟙 by default (the paper, the official code
and LibMTL), or 𝟙/K (torchjd), which divides every weight by K. When every eigenvalue is zero
(J = 0), or a gradient is not finite (overflow), B = I and α = p.
Hyperparameters: ``preference`` (ones) — ``ones``: α = B·𝟙; ``mean``: α = B·𝟙/K (torchjd).
``scale_mode`` (min) — σ is the smallest kept eigenvalue of M (``min``: the square of the
paper's smallest singular value σ_min; LibMTL; torchjd's default), their lower median
(``median``, as torch.median) or their mean (``rmse``, which torchjd describes as the original
implementation's). ``grad_source``.
State: none.
Grad sources: ``params`` (the paper's Aligned-MTL) and ``features`` (the paper's Aligned-MTL-UB,
on the shared representation).
Other implementations: torchjd's AlignedMTLWeighting is this computation with
``preference=mean`` (same scale modes, same rank tolerance with M in J's dtype; here M is formed
in float64). LibMTL's Aligned_MTL uses ``preference=ones`` and ``scale_mode=min`` but calls
``torch.symeig``, which torch ≥ 2.0 no longer has; it gives the heads the unweighted gradients,
whereas here the head of task k gets α_k ∇_head L_k (the project-wide convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np
import torch

from mtl_runner.weighting._balancing import spectrum
from mtl_runner.weighting._gram import as_weights, gram_matrix, precision
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource


class Preference(str, Enum):
    ones = "ones"
    mean = "mean"


class ScaleMode(str, Enum):
    min = "min"
    median = "median"
    rmse = "rmse"


def balance_matrix(gram: np.ndarray, eps: float, scale_mode: ScaleMode) -> np.ndarray:
    """B = √σ · V_r Λ_r^{-1/2} V_rᵀ from a float64 Gram matrix (identity when its rank is 0)."""
    decomposition = spectrum(gram, eps)  # of M / max_k M_kk: B does not depend on the scale of M
    if decomposition is None:  # every gradient is zero, or one overflowed
        return np.eye(len(gram))
    eigenvalues, vectors, dropped, _ = decomposition
    eigenvalues, vectors = eigenvalues[dropped:], vectors[:, dropped:]  # never empty: λ_max > 0
    if scale_mode is ScaleMode.min:
        scale = eigenvalues[0]  # ascending
    elif scale_mode is ScaleMode.median:
        scale = eigenvalues[(len(eigenvalues) - 1) // 2]  # the lower median, as torch.median
    else:
        scale = eigenvalues.mean()
    return np.sqrt(scale) * (vectors / np.sqrt(eigenvalues)) @ vectors.T


def balance_transformation(gram: torch.Tensor, eps: float, scale_mode: ScaleMode) -> torch.Tensor:
    """:func:`balance_matrix` of a float64 torch Gram matrix, as a torch tensor (on the CPU)."""
    return torch.from_numpy(balance_matrix(gram.detach().cpu().numpy(), eps, scale_mode))


class AlignedMTL(GradientWeighting):
    def __init__(
        self,
        task_names: Sequence[str],
        preference: Preference = Preference.ones,
        scale_mode: ScaleMode = ScaleMode.min,
        grad_source: GradSource = GradSource.params,
    ) -> None:
        super().__init__(task_names, grad_source)
        self.preference = Preference(preference)
        self.scale_mode = ScaleMode(scale_mode)

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        balance = balance_matrix(gram_matrix(jacobian), precision(jacobian.dtype), self.scale_mode)
        num_tasks = len(losses)  # the rows given: all tasks, or those present in the batch
        preference = np.ones(num_tasks)
        if self.preference is Preference.mean:
            preference /= num_tasks
        return Aggregation(weights=as_weights(balance @ preference, jacobian))
