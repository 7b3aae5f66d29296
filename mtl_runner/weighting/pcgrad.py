"""Projecting Conflicting Gradients (PCGrad).

Paper: T. Yu, S. Kumar, A. Gupta, S. Levine, K. Hausman, C. Finn, "Gradient Surgery for
Multi-Task Learning", NeurIPS 2020, https://arxiv.org/abs/2001.06782 (Algorithm 1).
Weight: the exact coefficients of the update on the original gradients. For each task i,
g_i^PC starts as g_i; for every other task j, in a random order, if g_i^PC·g_j < 0 then
g_i^PC ← g_i^PC − (g_i^PC·g_j)/‖g_j‖² · g_j. The update is the SUM d = Σ_i g_i^PC. Writing
g_i^PC = Σ_k C_ik g_k, the logged weight is c = C.sum(0), so d = Σ_k c_k g_k = cᵀJ exactly; c_k
is 1 plus what the other tasks' projections added of g_k (c = 1 when nothing conflicts).
Everything runs on the K × K Gram matrix (O(K³) plain float64 steps after one O(K²D) product),
divided by its largest diagonal entry, so the weights do not depend on the scale of J; a zero
gradient g_j is never projected on.
A gradient that is not finite (an overflow, e.g. a step the fp16 loss scaler will skip) gives
c = 1, the plain sum, with no draw.
Hyperparameters: none besides ``grad_source``.
State: none. The order is random: for each i, ``torch.randperm(K)`` from torch's global RNG
(seeded and checkpointed by the trainer), skipping i — the same draws as torchjd.
Grad sources: ``params`` (the paper: the shared parameters) and ``features`` (the same surgery on
∂L_k/∂z of the batch's shared representation).
Other implementations: torchjd's PCGradWeighting is the same Gram-form computation (same draws:
with the same seed it gives the same weights). LibMTL visits all j in ``random.shuffle`` order
(Python's RNG) including j = i, and adds 1e-8 to ‖g_j‖²; projecting g_i^PC onto its own
original g_i only changes anything in the rare case where g_i^PC has turned against g_i (about
1 in 2000 random K = 5 draws), which the paper's j ≠ i excludes, so it is not offered. LibMTL
logs the same implied weights; both give the heads unweighted gradients, whereas here the head of
task k gets c_k ∇_head L_k (the project-wide convention). Not permutation invariant (random
order).
"""

from __future__ import annotations

from operator import mul

import numpy as np
import torch

from mtl_runner.weighting._gram import as_weights
from mtl_runner.weighting._surgery import as_tensor, column_sums, overflowed, scale_free_gram
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting


class PCGrad(GradientWeighting):
    permutation_invariant = False  # random projection order

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        gram = scale_free_gram(jacobian)
        if overflowed(gram):  # nothing to project; the trainer's checks see the overflow
            return Aggregation(weights=as_weights(np.ones(len(gram)), jacobian))
        return Aggregation(weights=as_tensor(self.weights_from_gram(gram), jacobian))

    @staticmethod
    def weights_from_gram(gram: np.ndarray) -> list[float]:
        """c = C.sum(0) with g_i^PC = Σ_k C_ik g_k, from the symmetric Gram matrix G (float64)."""
        num_tasks = len(gram)
        g = gram.tolist()  # K is small: plain floats are faster than arrays
        projectable = [g[j][j] > 0 for j in range(num_tasks)]  # never project on g_j = 0
        coefficients = [[float(i == k) for k in range(num_tasks)] for i in range(num_tasks)]
        for i in range(num_tasks):
            project(i, coefficients[i], g, projectable)
        return column_sums(coefficients)


def project(i: int, row: list[float], g: list[list[float]], projectable: list[bool]) -> None:
    """g_i^PC (its coefficients ``row``, from e_i) projected in a random order."""
    untouched = True  # row = e_i, so g_i^PC · g_j is G_ij itself (the sum below, exactly)
    for j in torch.randperm(len(g)).tolist():
        if j == i or not projectable[j]:
            continue
        inner = g[i][j] if untouched else sum(map(mul, row, g[j]))  # G is symmetric
        if inner < 0:
            row[j] -= inner / g[j][j]
            untouched = False
