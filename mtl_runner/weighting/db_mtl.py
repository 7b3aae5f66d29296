"""Dual-Balancing Multi-Task Learning (DB-MTL).

Paper: B. Lin, W. Jiang, F. Ye, Y. Zhang, P. Chen, Y.-C. Chen, S. Liu, I. W. Tsang, J. T. Kwok,
"Dual-Balancing for Multi-Task Learning", arXiv 2023, https://arxiv.org/abs/2308.12029.
Weight: at step t, with the gradient of the log-loss h_k = ∇ log(L_k + ε) = g_k / (L_k + ε)
(ε = 1e-8; chain rule on the Jacobian, no extra backward),
  ĝ_k ← β_t ĝ_k + (1 − β_t) h_k        β_t = β / t^{β_σ}, ĝ initialised to 0
  α_k = max_j ‖ĝ_j‖ / ‖ĝ_k‖            (α_k = 0 when ĝ_k = 0)
  d = Σ_k α_k ĝ_k.
d is not a combination of the current gradients. The logged c_k is α_k / (L_k + ε): the
coefficient DB-MTL puts on ∇L_k once both balancings are applied, so d = Σ_k c_k ∇L_k exactly
when ``momentum=0``. With momentum, the current batch enters d as (1 − β_t) Σ_k c_k ∇L_k and the
rest is the memory β_t Σ_k α_k ĝ_k(t−1); at the first step (ĝ = 0) d = (1 − β) Σ_k c_k ∇L_k.
The head of task k gets c_k ∇_head L_k (the project's convention).
Hyperparameters: ``momentum`` β = 0.9 (0 ≤ β < 1) and ``momentum_decay`` β_σ = 0 (≥ 0): the
exponential moving average of the log-loss gradients, β_t = β / t^{β_σ} (constant by default).
State: the step t and ĝ ∈ ℝ^{K×D} (created at the first step; restarted from 0 if D changes),
saved with checkpoints. A step with non-finite gradients (an fp16 overflow, which the loss scaler
skips) leaves ĝ unchanged.
Grad sources: params only. ĝ averages gradients over steps; with ``features`` the rows of ∂L/∂z
belong to different samples in every batch, so the average would mix unrelated samples (LibMTL
refuses ``rep_grad`` for DB-MTL too).
Losses must be positive (the method takes their logarithm): a loss ≤ 0 is treated as 0, i.e.
its gradient is divided by ε.
Other implementations: LibMTL's ``DB_MTL`` (the authors' library) computes the same direction
(β 0.9, β_σ 0) but guards with ‖ĝ_k‖ + 1e-8, logs ones, and gives each head the unweighted
∇_head log L_k = ∇_head L_k / L_k (without α). torchjd has no DB-MTL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mtl_runner.weighting._checks import require
from mtl_runner.weighting._stochastic import decayed, finite_or
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource

LOG_EPS = 1e-8  # log(L + ε), as in LibMTL


class DBMTL(GradientWeighting):
    supported_sources = frozenset({GradSource.params})

    def __init__(
        self,
        task_names: Sequence[str],
        momentum: float = 0.9,
        momentum_decay: float = 0.0,
        grad_source: GradSource = GradSource.params,
    ) -> None:
        super().__init__(task_names, grad_source)
        require(0 <= momentum < 1, "momentum", momentum, "it must be in [0, 1)")
        require(momentum_decay >= 0, "momentum_decay", momentum_decay, "it must be >= 0")
        self.momentum = momentum
        self.momentum_decay = momentum_decay
        self._step = 0
        self._average: torch.Tensor | None = None  # ĝ, [K, D] in the Jacobian's dtype/device

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        self._step += 1
        beta = decayed(self.momentum, self.momentum_decay, self._step)
        inverse = 1.0 / (losses.detach().double().clamp_min(0.0) + LOG_EPS)  # d log(L+ε)/dL
        log_gradients = jacobian * inverse.to(jacobian.dtype).unsqueeze(1)
        previous = self._average
        if previous is None or previous.shape != log_gradients.shape:  # first step: ĝ = 0
            previous = torch.zeros_like(log_gradients)
        previous = previous.to(log_gradients.device, log_gradients.dtype)
        average = beta * previous + (1.0 - beta) * log_gradients
        norms = average.norm(dim=1).double()
        # an overflowed (fp16) step leaves ĝ as it was; d stays non-finite (the scaler skips it)
        self._average = finite_or(norms, average, previous)
        alpha = torch.where(norms == 0, torch.zeros_like(norms), norms.max() / norms)
        direction = alpha.to(average.dtype) @ average
        weights = torch.nan_to_num(alpha * inverse, nan=0.0, posinf=0.0)  # 0 on a skipped step
        return Aggregation(weights=weights.to(jacobian.dtype), direction=direction)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"step": self._step}
        if self._average is not None:
            state["average"] = self._average.detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._step = int(state["step"])
        average = state.get("average")
        self._average = None if average is None else torch.as_tensor(average).clone()
