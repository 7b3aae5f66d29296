"""Multiple-Gradient Descent Algorithm (MGDA; MGDA-UB with ``grad_source=features``).

Paper: O. Sener, V. Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018,
https://arxiv.org/abs/1810.04650 (Algorithm 2; MGDA-UB in §3.3).
Weight: α = argmin_{α∈Δ} ‖Σ_k α_k ĝ_k‖² over the simplex Δ, with ĝ_k = g_k / n_k the
(optionally normalised) task gradients; the shared parameters move along
Σ_k α_k ĝ_k = Σ_k (α_k/n_k) g_k, so the logged weight is c_k = α_k / n_k (= α_k, summing to 1,
with the default ``normalization=none``). With ``update=raw`` they move along Σ_k α_k g_k and
c_k = α_k. The direction d = Σ α_k ĝ_k is the min-norm point of the convex hull of the ĝ_k, so
it never conflicts with a task (⟨d, g_k⟩ ≥ n_k‖d‖² ≥ 0; not guaranteed with ``update=raw`` and
a normalisation). A direction below the rounding error of computing it (a numerically
Pareto-stationary point) is returned as exactly 0.
Hyperparameters:
``normalization`` (``none``) — n_k = 1 (``none``), ‖g_k‖ (``l2``), L_k (``loss``) or
L_k·‖g_k‖ (``loss+``); an n_k that is not positive (zero gradient, zero loss) counts as 1.
The paper's algorithm uses the raw gradients (``none``); the official code calls
normalisation optional and "not included in the paper", but its sample config uses ``loss+``.
``update`` (``normalized``) — ``normalized``: d = Σ α_k ĝ_k (LibMTL with grad_source=params);
``raw``: d = Σ α_k g_k, i.e. α only reweights the raw gradients (the official code, and LibMTL
with rep_grad=True). The two agree when ``normalization=none``.
``solver`` (``exact``) — ``exact``: the simplex QP solved to its KKT point in float64 (an
active-set method on the Gram matrix; SciPy's Lawson–Hanson nnls where it is nearly singular,
e.g. duplicated gradients); ``frank_wolfe``: the paper's Algorithm 2 exactly as torchjd runs it
(start at 1/K, at most 100 iterations, stop when the step γ < 1e-3), which can leave α about 0.1
away from the minimiser for K ≥ 3.
State: none.
Grad sources: params (MGDA) and features (MGDA-UB: the gradients ∂L_k/∂z of the shared
representation z of the whole batch, as in the paper's upper bound).
Other implementations: LibMTL (``mgda_gn``, default none) runs the official solver (best pair,
then projected-gradient steps, 250 iterations, tolerance 1e-5), moves along the normalised
gradients with rep_grad=False but along the raw ones with rep_grad=True, and logs α. torchjd's
MGDA has no normalisation and uses Frank-Wolfe (``solver=frank_wolfe``); it returns α.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from functools import partial

import numpy as np
import torch

from mtl_runner.weighting._min_norm import (
    aggregation,
    min_norm_weights,
    negligible,
    solve_on_gram,
)
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource

#: n_k: how the gradients are normalised before the min-norm problem ("loss+" = L_k·‖g_k‖)
MGDANormalization = Enum(
    "MGDANormalization", [(name, name) for name in ("none", "l2", "loss", "loss+")], type=str
)


class MGDAUpdate(str, Enum):
    normalized = "normalized"
    raw = "raw"


class MGDASolver(str, Enum):
    exact = "exact"
    frank_wolfe = "frank_wolfe"


_FRANK_WOLFE_ITERATIONS = 100
_FRANK_WOLFE_TOLERANCE = 1e-3


class MGDA(GradientWeighting):
    non_conflicting = True

    def __init__(
        self,
        task_names: Sequence[str],
        normalization: MGDANormalization = MGDANormalization.none,
        update: MGDAUpdate = MGDAUpdate.normalized,
        solver: MGDASolver = MGDASolver.exact,
        grad_source: GradSource = GradSource.params,
    ) -> None:
        super().__init__(task_names, grad_source)
        self.normalization = MGDANormalization(normalization)
        self.update = MGDAUpdate(update)
        self.solver = MGDASolver(solver)

    def normalizers(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        """n_k for ĝ_k = g_k / n_k; entries that are not positive become 1."""
        norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        n = {
            "none": np.ones_like(norms),
            "l2": norms,
            "loss": losses,
            "loss+": losses * norms,
        }[self.normalization.value]
        return np.where((n > 0) & np.isfinite(n), n, 1.0)

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        if self.normalization.value != "none":  # the normalisers are computed in numpy
            losses = losses.detach().double().cpu().numpy()
        uniform = np.full(self.num_tasks, 1.0 / self.num_tasks)  # for overflowed gradients
        solve = partial(self.weights_from_gram, losses=losses)
        solution = solve_on_gram(jacobian, solve, uniform)
        return aggregation(solution.weights, jacobian, negligible(solution, jacobian.dtype))

    def weights_from_gram(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        if self.normalization.value == "none":  # n = 1: nothing to divide
            if self.solver is MGDASolver.exact:
                return min_norm_weights(gram)
            return frank_wolfe(gram)
        n = self.normalizers(gram, losses)
        normalized_gram = gram / np.outer(n, n)
        if self.solver is MGDASolver.exact:
            alpha = min_norm_weights(normalized_gram)
        else:
            alpha = frank_wolfe(normalized_gram)
        return alpha / n if self.update is MGDAUpdate.normalized else alpha


def frank_wolfe(gram: np.ndarray) -> np.ndarray:
    """Sener & Koltun's Algorithm 2 as torchjd runs it: from 1/K, exact line search per step."""
    num_tasks = gram.shape[0]
    alpha = np.full(num_tasks, 1.0 / num_tasks)
    for _ in range(_FRANK_WOLFE_ITERATIONS):
        product = gram @ alpha
        t = int(np.argmin(product))
        a, b, c = product[t], alpha @ product, gram[t, t]  # ⟨α,e_t⟩_M, ‖α‖²_M, ‖e_t‖²_M
        if c <= a:
            gamma = 1.0
        elif b <= a:
            gamma = 0.0
        else:
            gamma = (b - a) / (b + c - 2 * a)
        alpha = (1 - gamma) * alpha
        alpha[t] += gamma
        if gamma < _FRANK_WOLFE_TOLERANCE:
            break
    return alpha
