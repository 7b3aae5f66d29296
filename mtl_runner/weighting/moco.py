"""Multi-objective gradient Correction (MoCo).

Paper: H. D. Fernando, H. Shen, M. Liu, S. Chaudhury, K. Murugesan, T. Chen, "Mitigating
Gradient Bias in Multi-objective Learning: A Provably Convergent Approach", ICLR 2023,
https://openreview.net/forum?id=dLAYGdKTi2 (arXiv 2210.12624), Algorithm 1.
Weight: the logged c is λ, the simplex weights of the *tracked* gradients: at step t
  ĝ_k = g_k · L_k / ‖g_k‖   (``gradient_normalization=loss_norm``; ĝ_k = g_k with ``none``)
  y_k ← y_k − β_t (y_k − ĝ_k)                       β_t = β / t^{β_σ}
  λ ← Π_Δ(λ − γ_t (Y Yᵀ + ρ I) λ)                   γ_t = γ / t^{γ_σ}
  d = Σ_k λ_k y_k,
so d is not a combination of the current gradients: the current batch enters it as
Σ_k β_t λ_k (L_k / ‖g_k‖) g_k (with ``none``: Σ_k β_t λ_k g_k), the rest is the memory
(1 − β_t) Σ_k λ_k y_k(t−1). The head of task k gets λ_k ∇_head L_k (the project's convention).
Hyperparameters (the paper analyses generic decaying step sizes; the defaults are those of the
authors' code as shipped in LibMTL, with the paper's simplex projection):
  ``tracking_rate`` β = 0.5 and ``tracking_decay`` β_σ = 0.5 — step size of the gradient tracking
  y, β_t = β / t^{β_σ} (0 < β ≤ 1, β_σ ≥ 0; β = 1 with β_σ = 0 tracks nothing: y = ĝ).
  ``lambda_rate`` γ = 0.1 and ``lambda_decay`` γ_σ = 0.5 — step size of λ, γ_t = γ / t^{γ_σ}.
  ``regularization`` ρ = 0 — the ℓ2 term ρI of the λ subproblem (ρ ≥ 0).
  ``lambda_update`` — ``projection`` (default, the paper's Π_Δ) or ``softmax`` (LibMTL:
  λ ← softmax(λ − γ_t(YYᵀ + ρI)λ)).
  ``gradient_normalization`` — ``loss_norm`` (default): each task gradient rescaled to norm L_k
  before tracking, as in LibMTL's version of the authors' code; a zero gradient stays zero (no ε).
  ``none``: the raw stochastic gradients of Algorithm 1.
State: the step t, λ (init 1/K) and y ∈ ℝ^{K×D} (init 0, created at the first step; if D ever
changes — a different model — y restarts from 0). All are saved with checkpoints. A step with
non-finite gradients (an fp16 overflow, which the loss scaler skips) leaves y and λ unchanged.
Grad sources: params only. y is a running average over steps; with ``features`` its rows would
be gradients with respect to *different samples'* representations (each batch holds other rows,
reshuffled every epoch), so the average and the direction applied to the current batch's z mean
nothing. LibMTL refuses ``rep_grad`` for MoCo too.
Other implementations: LibMTL's ``MoCo`` (from the authors' shared code) is this method with
``lambda_update=softmax``, ``gradient_normalization=loss_norm`` and the same defaults
(β 0.5, β_σ 0.5, γ 0.1, γ_σ 0.5, ρ 0); it adds 1e-8 to ‖g_k‖ and logs λ; its heads get the
unweighted ∇_head L_k. The authors' Trade-Off-MOL repository (heshandevaka/Trade-Off-MOL) uses
constant β = 0.1, γ = 0.1, ρ = 0.1, the simplex projection and no normalisation by default
(``tracking_decay=0 lambda_decay=0 tracking_rate=0.1 regularization=0.1
gradient_normalization=none``; it normalises y after tracking when asked, which is not offered
here). torchjd has no MoCo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum
from typing import Any

import torch

from mtl_runner.weighting._checks import require
from mtl_runner.weighting._stochastic import (
    decayed,
    project_onto_simplex,
    project_onto_simplex_array,
)
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource


class LambdaUpdate(str, Enum):
    projection = "projection"
    softmax = "softmax"


class MoCoNormalization(str, Enum):
    loss_norm = "loss_norm"
    none = "none"


class MoCo(GradientWeighting):
    supported_sources = frozenset({GradSource.params})

    def __init__(
        self,
        task_names: Sequence[str],
        tracking_rate: float = 0.5,
        tracking_decay: float = 0.5,
        lambda_rate: float = 0.1,
        lambda_decay: float = 0.5,
        regularization: float = 0.0,
        lambda_update: LambdaUpdate = LambdaUpdate.projection,
        gradient_normalization: MoCoNormalization = MoCoNormalization.loss_norm,
        grad_source: GradSource = GradSource.params,
    ) -> None:
        super().__init__(task_names, grad_source)
        require(0 < tracking_rate <= 1, "tracking_rate", tracking_rate, "it must be in (0, 1]")
        require(tracking_decay >= 0, "tracking_decay", tracking_decay, "it must be >= 0")
        require(lambda_decay >= 0, "lambda_decay", lambda_decay, "it must be >= 0")
        require(lambda_rate > 0, "lambda_rate", lambda_rate, "it must be positive")
        require(regularization >= 0, "regularization", regularization, "it must be >= 0")
        self.tracking_rate = tracking_rate
        self.tracking_decay = tracking_decay
        self.lambda_rate = lambda_rate
        self.lambda_decay = lambda_decay
        self.regularization = regularization
        self.lambda_update = LambdaUpdate(lambda_update)
        self.gradient_normalization = MoCoNormalization(gradient_normalization)
        self._step = 0
        self._lambda = torch.full((self.num_tasks,), 1.0 / self.num_tasks, dtype=torch.float64)
        self._tracking: torch.Tensor | None = None  # y, [K, D] in the Jacobian's dtype/device

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        self._step += 1
        beta = decayed(self.tracking_rate, self.tracking_decay, self._step)
        gamma = decayed(self.lambda_rate, self.lambda_decay, self._step)
        tracked = self._normalised(jacobian, losses)
        previous = self._tracking
        if previous is None or previous.shape != tracked.shape:  # first step (or another model)
            previous = torch.zeros_like(tracked)
        previous = previous.to(tracked.device, tracked.dtype)
        y = previous - beta * (previous - tracked)
        gram = (y @ y.T).double()
        lam = self._lambda.to(gram.device)
        step = lam - gamma * (gram @ lam + self.regularization * lam)
        if self.lambda_update is LambdaUpdate.projection:
            new_lambda = _project(step)
        else:
            new_lambda = torch.softmax(torch.nan_to_num(step), dim=0)
        # an overflowed (fp16) step leaves y and λ as they were; d stays non-finite (skipped);
        # one finiteness test for both (no host sync)
        finite = torch.isfinite(gram).all()
        if gram.device.type == "cpu":  # the test is free on the host and spares a [K, D] copy
            self._tracking, self._lambda = (y, new_lambda) if finite else (previous, lam)
        else:
            self._tracking = torch.where(finite, y, previous)
            self._lambda = torch.where(finite, new_lambda, lam)
        weights = self._lambda.to(jacobian.dtype)
        return Aggregation(weights=weights, direction=weights @ y)

    def _normalised(self, jacobian: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        if self.gradient_normalization is MoCoNormalization.none:
            return jacobian
        norms = jacobian.norm(dim=1, keepdim=True)
        # a zero row (all entries ±0) over an infinite norm stays zero: the [K, 1] fill spares
        # a zeros tensor and a select over [K, D]
        units = jacobian / norms.masked_fill_(norms == 0, math.inf)
        return units * losses.detach().to(jacobian.dtype).unsqueeze(1)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"step": self._step, "lambda": self._lambda.detach().cpu().clone()}
        if self._tracking is not None:
            state["tracking"] = self._tracking.detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._step = int(state["step"])
        self._lambda = torch.as_tensor(state["lambda"], dtype=torch.float64).clone()
        tracking = state.get("tracking")
        self._tracking = None if tracking is None else torch.as_tensor(tracking).clone()


def _project(step: torch.Tensor) -> torch.Tensor:
    """Π_Δ(step): on the CPU through the host version, whose few Python-float operations cost
    less than the torch version's ~17 kernels (the same IEEE steps, so the same values)."""
    if step.device.type != "cpu":
        return project_onto_simplex(step)
    return torch.from_numpy(project_onto_simplex_array(step.detach().numpy()))
