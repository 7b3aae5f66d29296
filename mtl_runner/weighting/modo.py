"""Multi-objective gradient with Double sampling (MoDo).

Paper: L. Chen, H. Fernando, Y. Ying, T. Chen, "Three-Way Trade-Off in Multi-Objective Learning:
Optimization, Generalization and Conflict-Avoidance", NeurIPS 2023 (JMLR 2024),
https://arxiv.org/abs/2305.20057.
Weight: c = λ after this step's update, and the shared parameters move along exactly
Σ_k λ_k ∇L_k of the third batch. Each optimizer step uses three batches: this one (1) and two
fresh ones from the epoch (2, 3), with Jacobians J_1, J_2, J_3 w.r.t. the shared parameters:
  λ ← Π_Δ(λ − γ (J_1 J_2ᵀ λ + ρ λ))     (J_1 J_2ᵀ is unbiased for the Gram matrix)
  d = J_3ᵀ λ.
The head of task k gets λ_k ∇_head L_k of batch 3 (the project's convention).
An epoch therefore has about a third of the optimizer steps, and every drawn batch's losses
count in ``train/loss/<task>``. When the epoch runs out, the batches present are reused: with
two, J_1, J_2 come from batches 1, 2 and d from batch 2; with one (also the single-Jacobian
:meth:`MoDo.aggregate`, which the property tests call), J_1 = J_2 = J_3 = J, i.e.
λ ← Π_Δ(λ − γ (J Jᵀ + ρ I) λ), d = Jᵀλ.
Hyperparameters: ``lambda_rate`` γ = 0.1 (> 0), the step size of λ; ``regularization`` ρ = 0.1
(≥ 0), the ℓ2 term of the λ subproblem.
State: λ (init 1/K), saved with checkpoints. A step with non-finite gradients (an fp16
overflow, which the loss scaler skips) leaves λ unchanged.
Grad sources: params only. J_1 J_2ᵀ pairs gradients of two different batches; w.r.t. the shared
representation their rows are different samples, so the product estimates nothing (LibMTL
refuses ``rep_grad`` for MoDo too).
Other implementations: the authors' code (heshandevaka/Trade-Off-MOL) defaults to γ = 0.1,
ρ = 0.1 (torchjd's ``MoDoWeighting`` too: ``lambda_rate=0.1``) and, in that version, updates the
model with the sum of both batches' gradients; its NYU-v2 script uses γ = 1e-3, which is
LibMTL's default (``lambda_rate=0.001``). LibMTL draws 3 batches like this, logs λ, and gives the
heads the unweighted ∇_head L_k summed over the 3 batches and divided by 3; here the heads get
λ_k ∇_head L_k of batch 3 only. torchjd leaves the batches to the user.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mtl_runner.weighting._checks import require
from mtl_runner.weighting._stochastic import (
    batch_jacobians,
    finite_or,
    project_onto_simplex,
    write_gradients,
)
from mtl_runner.weighting.base import StepContext
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource


class MoDo(GradientWeighting):
    splits_representation = False  # its own backward needs the losses joined to the trunk
    supported_sources = frozenset({GradSource.params})

    def __init__(
        self,
        task_names: Sequence[str],
        lambda_rate: float = 0.1,
        regularization: float = 0.1,
        grad_source: GradSource = GradSource.params,
    ) -> None:
        super().__init__(task_names, grad_source)
        require(lambda_rate > 0, "lambda_rate", lambda_rate, "it must be positive")
        require(regularization >= 0, "regularization", regularization, "it must be >= 0")
        self.lambda_rate = lambda_rate
        self.regularization = regularization
        self._lambda = torch.full((self.num_tasks,), 1.0 / self.num_tasks, dtype=torch.float64)

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        """The single-batch form: J_1 = J_2 = J_3 = ``jacobian``."""
        return Aggregation(weights=self.update(jacobian, jacobian).to(jacobian.dtype))

    def update(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """λ ← Π_Δ(λ − γ (J_1 J_2ᵀ λ + ρ λ)) from two batches' Jacobians; returns λ (float64)."""
        return self._update(first, second)[0]

    def _update(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, ...]:
        product = (first @ second.T).double()
        lam = self._lambda.to(product.device)
        step = lam - self.lambda_rate * (product @ lam + self.regularization * lam)
        # an overflowed (fp16) product leaves λ as it was (the loss scaler skips the step)
        self._lambda = finite_or(product, project_onto_simplex(step), lam)
        return self._lambda, torch.isfinite(product).all()

    def backward(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        jacobians, head_rows = batch_jacobians(
            losses, context, self.task_names, extra_batches=2, head_batch=-1
        )
        lam, finite = self._update(jacobians[0], jacobians[1 % len(jacobians)])
        last = jacobians[-1]
        weights = lam.to(last.dtype)
        write_gradients(context, self.task_names, weights, last, head_rows, finite)
        return weights

    def state_dict(self) -> dict[str, Any]:
        return {"lambda": self._lambda.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._lambda = torch.as_tensor(state["lambda"], dtype=torch.float64).clone()
