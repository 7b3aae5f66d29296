"""Aligned multi-task learning (Aligned-MTL).

Paper: D. Senushkin, N. Patakin, A. Kuznetsov, A. Konushin, "Independent Component Alignment for
Multi-Task Learning", CVPR 2023, https://arxiv.org/abs/2305.19000 (Algorithm 1).
Weight: with M = J Jᵀ = V Λ Vᵀ (eigenvalues below λ_max·K·eps, eps of J's dtype, count as zero
and are dropped with their eigenvectors), the balance transformation is
B = √σ · V_r Λ_r^{-1/2} V_rᵀ, and the logged weight is α = B·p, so the shared parameters move
along d = Σ_k α_k g_k: the gradient matrix with all its singular values set to √σ (an aligned,
well-conditioned system), times the preference p. p = 𝟙 by default (the paper, the official code
and LibMTL), or 𝟙/K (torchjd), which divides every weight by K. When every eigenvalue is zero
(J = 0), B = I and α = p.
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

import torch

from mtl_runner.weighting._balancing import gram_matrix, precision, to_weights
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource


class Preference(str, Enum):
    ones = "ones"
    mean = "mean"


class ScaleMode(str, Enum):
    min = "min"
    median = "median"
    rmse = "rmse"


def balance_transformation(gram: torch.Tensor, eps: float, scale_mode: ScaleMode) -> torch.Tensor:
    """B = √σ · V_r Λ_r^{-1/2} V_rᵀ from a float64 Gram matrix (identity when its rank is 0)."""
    num_tasks = gram.shape[0]
    identity = torch.eye(num_tasks, dtype=torch.float64)
    top = float(torch.diagonal(gram).max())
    if not top > 0:
        return identity
    eigenvalues, vectors = torch.linalg.eigh(gram / top)  # B does not depend on the scale of M
    kept = eigenvalues > eigenvalues.max() * num_tasks * eps
    if not kept.any():
        return identity
    eigenvalues, vectors = eigenvalues[kept], vectors[:, kept]
    if scale_mode is ScaleMode.min:
        scale = eigenvalues.min()
    elif scale_mode is ScaleMode.median:
        scale = eigenvalues.median()
    else:
        scale = eigenvalues.mean()
    return scale.sqrt() * (vectors * eigenvalues.rsqrt()) @ vectors.T


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
        balance = balance_transformation(
            gram_matrix(jacobian), precision(jacobian), self.scale_mode
        )
        num_tasks = len(losses)  # the rows given: all tasks, or those present in the batch
        preference = torch.ones(num_tasks, dtype=torch.float64)
        if self.preference is Preference.mean:
            preference /= num_tasks
        return Aggregation(weights=to_weights(balance @ preference, jacobian))
