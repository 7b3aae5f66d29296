"""Gradient Vaccine (GradVac).

Paper: Z. Wang, Y. Tsvetkov, O. Firat, Y. Cao, "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", ICLR 2021,
https://arxiv.org/abs/2010.05874 (Algorithm 1).
Weight: the exact coefficients of the update on the original gradients. For each task i,
g_i^PC starts as g_i; for every other task j, in a random order, with
φ_ij = cos(g_i^PC, g_j): if φ_ij < φ̂_ij then
g_i^PC ← g_i^PC + ‖g_i^PC‖ (φ̂_ij √(1−φ_ij²) − φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²)) · g_j,
which raises the cosine to exactly φ̂_ij; then, always, φ̂_ij ← (1−β) φ̂_ij + β φ_ij (with the
φ_ij measured before the correction). The update is the SUM d = Σ_i g_i^PC. Writing
g_i^PC = Σ_k C_ik g_k, the logged weight is c = C.sum(0), so d = Σ_k c_k g_k = cᵀJ exactly.
The computation runs on the K × K Gram matrix (products in J's dtype; the O(K³) scalar steps in
plain floats), divided by its largest diagonal entry (cosines and the ratio ‖g_i^PC‖/‖g_j‖ do
not depend on scale), so the weights do not depend on the scale of J; a zero g_i^PC or g_j has
cosine 0, and a zero g_j is never added. A target of exactly φ̂ = 1 (reachable only with
beta = 1 on parallel gradients) has no finite correction and is left alone. A gradient that is
not finite (an overflow, e.g. a step the fp16 loss scaler will skip) gives c = 1, the plain sum,
with no draw, and leaves the targets as they were.
Hyperparameters: ``beta`` ∈ [0, 1], the EMA rate of the targets (paper: 1e-2; LibMTL and
torchjd default to 0.5 — set beta=0.5 for their variant; beta = 0 keeps every target at 0,
which is PCGrad).
State: the targets φ̂ ([K, K], float64, initialised to 0; saved with checkpoints).
The order is random: for each i, ``torch.randperm(K − 1)`` over the other tasks, from torch's
global RNG (seeded and checkpointed by the trainer) — the same draws as torchjd.
Grad sources: ``params`` (the paper: the shared parameters) and ``features`` (the same on ∂L_k/∂z
of the batch's shared representation).
Grouping: one group, the whole shared vector (LibMTL's default ``GradVac_group_type=0``). The
paper's per-layer / per-matrix targets (LibMTL types 1 and 2) are not offered: ``aggregate``
sees the flattened Jacobian without the parameter boundaries, and per-group coefficients would
no longer make d a combination Σ c_k g_k of the whole gradients.
Other implementations: torchjd's GradVacWeighting is the same Gram-form computation with the
same draws (it adds eps = 1e-8 to the denominators, which matters only for tiny gradients).
LibMTL computes the same on the gradient vectors with 1e-8 guards and Python's RNG; before its
2024 fix it updated φ̂ only when correcting. LibMTL logs ones; it and torchjd give the heads
unweighted gradients, whereas here the head of task k gets c_k ∇_head L_k (the project-wide
convention). Not permutation invariant (random order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import mul
from typing import Any

import numpy as np
import torch

from mtl_runner.weighting._checks import require
from mtl_runner.weighting._gram import as_weights
from mtl_runner.weighting._surgery import as_tensor, column_sums, overflowed, scale_free_gram
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource


class GradVac(GradientWeighting):
    permutation_invariant = False  # random order; the targets belong to task positions

    def __init__(
        self,
        task_names: Sequence[str],
        beta: float = 0.01,
        grad_source: GradSource = GradSource.params,
    ) -> None:
        super().__init__(task_names, grad_source)
        require(0.0 <= beta <= 1.0, "beta", beta, "it must be in [0, 1]")
        self.beta = float(beta)
        self.targets = torch.zeros(self.num_tasks, self.num_tasks, dtype=torch.float64)

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        gram = scale_free_gram(jacobian)
        if overflowed(gram):  # no cosines to measure: the targets must not become NaN
            return Aggregation(weights=as_weights(np.ones(len(gram)), jacobian))
        return Aggregation(weights=as_tensor(self.weights_from_gram(gram), jacobian))

    def weights_from_gram(self, gram: np.ndarray) -> list[float]:
        """c = C.sum(0) from the symmetric Gram matrix G (float64); updates the targets φ̂."""
        num_tasks = len(gram)
        g = gram.tolist()  # K is small: plain floats are faster than arrays
        targets = self.targets.tolist()
        norms = [math.sqrt(row[j]) if row[j] > 0.0 else 0.0 for j, row in enumerate(g)]
        coefficients = [[float(i == k) for k in range(num_tasks)] for i in range(num_tasks)]
        for i in range(num_tasks):
            self._vaccinate(i, coefficients[i], targets[i], g, norms)
        self.targets = torch.tensor(targets, dtype=torch.float64)
        return column_sums(coefficients)

    def _vaccinate(
        self,
        i: int,
        row: list[float],
        target_row: list[float],
        g: list[list[float]],
        norms: list[float],
    ) -> None:
        """g_i^PC (its coefficients ``row``, from e_i) against every other task in a random
        order; updates φ̂_i· (``target_row``) in place."""
        sqrt, decay, rate = math.sqrt, 1.0 - self.beta, self.beta
        inner = g[i]  # g_i^PC · g_k for every k: g_i^PC = g_i to begin with
        norm_i = norms[i]  # ‖g_i^PC‖, recomputed only when g_i^PC changes
        for index in torch.randperm(len(g) - 1).tolist():
            j = index if index < i else index + 1  # the index-th task other than i
            norm_j, target = norms[j], target_row[j]
            denominator = norm_i * norm_j
            cosine = inner[j] / denominator if denominator > 0.0 else 0.0
            cosine = 1.0 if cosine > 1.0 else -1.0 if cosine < -1.0 else cosine
            room = 1.0 - target * target
            room = sqrt(room) if room > 0.0 else 0.0
            if cosine < target and norm_j > 0.0 and room > 0.0:
                sine = 1.0 - cosine * cosine
                sine = sqrt(sine) if sine > 0.0 else 0.0
                step = norm_i * (target * sine - cosine * room) / (norm_j * room)
                row[j] += step
                inner = [p + step * q for p, q in zip(inner, g[j])]
                norm_i = length(row, inner)
            target_row[j] = decay * target + rate * cosine

    def state_dict(self) -> dict[str, Any]:
        return {"targets": self.targets.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        targets = torch.as_tensor(state["targets"], dtype=torch.float64).clone()
        if targets.shape != (self.num_tasks, self.num_tasks):
            raise ValueError(
                f"GradVac state has targets of shape {tuple(targets.shape)}, "
                f"expected ({self.num_tasks}, {self.num_tasks})"
            )
        self.targets = targets


def length(coefficients: list[float], inner: list[float]) -> float:
    """‖Σ_k C_k g_k‖ from C and the inner products Σ_m C_m g_m · g_k (float64)."""
    squared = sum(map(mul, coefficients, inner))
    return math.sqrt(squared) if squared > 0.0 else 0.0
