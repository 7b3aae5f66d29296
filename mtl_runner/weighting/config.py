"""Conflict-Free Inverse Gradients (ConFIG).

Paper: Q. Liu, M. Chu, N. Thuerey, "ConFIG: Towards Conflict-free Training of Physics Informed
Neural Networks", ICLR 2025, https://arxiv.org/abs/2408.11104 (Eq. 2).
Direction: with the unit gradients u_k = g_k/‖g_k‖ as the rows of U, g_u = U⁺ 1 (the minimum-norm
solution of U g_u = 1: equal positive cosines with every task), unit = g_u/‖g_u‖, and
d = (Σ_k ⟨g_k, unit⟩) · unit. When the gradients are linearly independent, ⟨d, g_k⟩ > 0 for
every k (the paper's conflict-free guarantee).
Weight: d lies in the row space of J, so d = cᵀJ exactly, and c is computed in closed form (not
fitted): U⁺ 1 = Uᵀ (UUᵀ)⁺ 1, so with Ĝ = UUᵀ (the cosine matrix), a = Ĝ⁺ 1 and b_k = a_k/‖g_k‖,
g_u = Σ_k b_k g_k and c = (1ᵀGb / bᵀGb) · b, where G = JJᵀ (products in J's dtype); Ĝ⁺ comes
from one eigendecomposition (LAPACK's dsyevd) of the K × K matrix Ĝ. c is scale free (J scaled
by 1e-8 or 1e8 gives the same c) and c = 0 when d = 0, and when a gradient is not finite (an
overflow). When J is rank deficient, c is not unique and the one logged is this construction's.
c_k can be negative (about 1 in 5 random K = 4 draws); the head of task k still gets
c_k ∇_head L_k (the project-wide convention).
Rank: eigenvalues of Ĝ below max(1e-10, K·eps) of the largest count as zero, eps the precision
of J's dtype in which the Gram products are formed (float32: about 4e-7 at K = 3, where torchjd's
pinv cut, max(K, D)·eps on the singular values of U, is about 1e-6 on these eigenvalues for
D = 8192; float64: 1e-10, i.e. independent parts below 1e-5 of the largest singular value of U). A
zero gradient has u_k = 0 and drops out (its equation cannot hold). When the gradients are
linearly dependent, U g_u = 1 may have no solution and the least-squares g_u can conflict with a
task (e.g. g, −2g, g/2 give d = Σ_k g_k = −g/2): the method is therefore not declared
non-conflicting; it is for linearly independent gradients (and whenever U g_u = 1 is solvable).
Hyperparameters: none besides ``grad_source``.
State: none.
Grad sources: ``params`` (the paper: the network's parameters) and ``features`` (the same on
∂L_k/∂z of the batch's shared representation).
Other implementations: torchjd's ConFIG computes the same direction from ``pinv(U)`` on the
Jacobian itself (its cut-off, torch's default rtol = max(K, D)·eps on U's singular values, grows
with D) and returns no weights; its ``pref_vector`` (default ones, the paper's) is not offered.
LibMTL has no ConFIG. The paper's momentum variant (M-ConFIG) is not this method.
"""

from __future__ import annotations

import numpy as np
import torch

from mtl_runner.weighting._gram import as_weights, gram_matrix, precision, symmetric_eigh
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting

#: eigenvalues of the cosine matrix below this (or below K·eps of the Gram matrix's products,
#: its rounding level) times the largest count as zero
RANK_RTOL = 1e-10


class ConFIG(GradientWeighting):
    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        return Aggregation(
            weights=as_weights(
                self.weights_from_gram(gram_matrix(jacobian), precision(jacobian.dtype)), jacobian
            )
        )

    @staticmethod
    def weights_from_gram(gram: np.ndarray, eps: float = 0.0) -> np.ndarray:
        """c with d = cᵀJ, from the symmetric Gram matrix G = JJᵀ (float64) whose products were
        formed with relative precision ``eps``."""
        zeros = np.zeros(len(gram))
        largest = gram.diagonal().max()
        if not 0.0 < largest < np.inf:  # J = 0, or a gradient overflowed (inf or NaN)
            return zeros
        gram = gram / largest  # c is scale free; this keeps every product in range
        norms = np.sqrt(np.maximum(gram.diagonal(), 0.0))
        inverse_norms = np.divide(1.0, norms, out=zeros.copy(), where=norms > 0)  # 0: u_k = 0
        cosines = gram * inverse_norms[:, None] * inverse_norms[None, :]
        eigenvalues, eigenvectors = symmetric_eigh(cosines)
        kept = eigenvalues > max(RANK_RTOL, len(gram) * eps) * eigenvalues.max()
        # a = Ĝ⁺ 1 = V Λ⁺ Vᵀ 1, with 1/λ on the kept eigenvalues and 0 on the others
        inverse_eigenvalues = np.divide(1.0, eigenvalues, out=zeros.copy(), where=kept)
        solution = eigenvectors @ (inverse_eigenvalues * eigenvectors.sum(0))
        b = solution * inverse_norms  # g_u = Σ_k b_k g_k
        gram_b = gram @ b
        squared_norm = b @ gram_b  # ‖g_u‖²
        if not squared_norm > 0:
            return zeros
        return gram_b.sum() / squared_norm * b
