"""Stochastic Direction-oriented Multi-objective Gradient descent (SDMGrad).

Paper: P. Xiao, H. Ban, K. Ji, "Direction-oriented Multi-objective Learning: Simple and Provable
Stochastic Algorithms", NeurIPS 2023, https://arxiv.org/abs/2305.18409 (Algorithm 1).
Weight: c_k = (w_k + λ/K) / (1 + λ), and the shared parameters move along exactly
Σ_k c_k ∇L_k of batch ζ: d = (J_ζᵀ w + λ ḡ_ζ) / (1 + λ) with ḡ_ζ the mean task gradient.
Each optimizer step uses three batches: this one (ζ, for the direction) and two fresh ones from
the epoch (ξ, ξ'). With A = J_ξ J_ξ'ᵀ (not symmetric in general), normalised to A / s² with
s = mean_k √max(A_kk, 0) (left as is when s = 0), and a = A·𝟙/K, w is improved by
``inner_steps`` steps of projected SGD with momentum from its previous value:
  v ← μ v + (A w + λ a)   (v = A w + λ a at the first inner step),   w ← Π_Δ(w − η v).
Up to the 1/s² normalisation, A w + λ a is the paper's stochastic gradient J_ξ(J_ξ'ᵀ w + λ ḡ_ξ')
of ½‖Jᵀw + λ ḡ‖² over the simplex; the momentum buffer restarts every optimizer step.
The head of task k gets c_k ∇_head L_k of batch ζ (the project's convention).
An epoch therefore has about a third of the optimizer steps, and every drawn batch's losses
count in ``train/loss/<task>``. When the epoch runs out, the batches present are reused (ζ is
always this batch): with two, ξ is the drawn batch and ξ' this one; with one (also the
single-Jacobian :meth:`SDMGrad.aggregate`, which the property tests call), ζ = ξ = ξ' and A = J Jᵀ.
Hyperparameters: ``regularization`` λ = 0.3 (≥ 0) — how strongly d is pulled towards the mean
gradient (λ → ∞: equal weighting; λ = 0: the stochastic MGDA direction); ``inner_steps`` = 20
(≥ 1), ``inner_lr`` η = 10 (> 0), ``inner_momentum`` μ = 0.5 (0 ≤ μ < 1) — the inner solver.
State: w (init 1/K), saved with checkpoints. A step with non-finite gradients (an fp16
overflow, which the loss scaler skips) leaves w unchanged.
Grad sources: params only. A pairs gradients of two different batches; w.r.t. the shared
representation their rows are different samples, so A estimates nothing (LibMTL refuses
``rep_grad`` for SDMGrad too).
Other implementations: the official code (OptMN-Lab/sdmgrad, ``methods/weight_methods.py``) uses
η = 10, μ = 0.5, 20 steps and λ = 0.3 in its NYU-v2 script (class default 0.6), but normalises with
s = mean_k √(A_kk + 1e-4), multiplies d by K and clips its norm to 1 (and, through a
list-aliasing slip, fills ζ, ξ and ξ' with the same batch's gradients). torchjd's
``SDMGradWeighting`` has the same inner loop and defaults (lr 10) and divides by s² + 1e-8.
LibMTL's ``SDMGrad`` hard-codes η = 5 (``inner_lr=5``), divides by s² + 1e-8 (so 1e-8-sized
gradients barely move w), logs nothing, and gives the heads the unweighted ∇_head L_k summed
over the 3 batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mtl_runner.weighting._checks import require
from mtl_runner.weighting._stochastic import (
    FLOAT_ROUTE_SIZE,
    batch_jacobians,
    project_floats_onto_simplex,
    project_onto_simplex_array,
    write_gradients,
)
from mtl_runner.weighting.base import StepContext
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource


class SDMGrad(GradientWeighting):
    splits_representation = False  # its own backward needs the losses joined to the trunk
    supported_sources = frozenset({GradSource.params})

    def __init__(
        self,
        task_names: Sequence[str],
        regularization: float = 0.3,
        inner_steps: int = 20,
        inner_lr: float = 10.0,
        inner_momentum: float = 0.5,
        grad_source: GradSource = GradSource.params,
    ) -> None:
        super().__init__(task_names, grad_source)
        require(regularization >= 0, "regularization", regularization, "it must be >= 0")
        require(inner_steps >= 1, "inner_steps", inner_steps, "it must be at least 1")
        require(inner_lr > 0, "inner_lr", inner_lr, "it must be positive")
        require(0 <= inner_momentum < 1, "inner_momentum", inner_momentum, "it must be in [0, 1)")
        self.regularization = regularization
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.inner_momentum = inner_momentum
        self._w = torch.full((self.num_tasks,), 1.0 / self.num_tasks, dtype=torch.float64)

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        """The single-batch form: ζ = ξ = ξ' = ``jacobian``."""
        return Aggregation(weights=self.update(jacobian, jacobian).to(jacobian.dtype))

    def update(self, xi: torch.Tensor, xi_prime: torch.Tensor) -> torch.Tensor:
        """Improve w on A = J_ξ J_ξ'ᵀ; returns the weights c on batch ζ's gradients (float64)."""
        return self._update(xi, xi_prime)[0]

    def _update(self, xi: torch.Tensor, xi_prime: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # K×K on the host: the inner steps cost microseconds in numpy, far more as torch calls
        product = xi.detach() @ xi_prime.detach().T
        if product.device.type != "cpu" or product.dtype not in (torch.float32, torch.float64):
            product = product.double().cpu()
        matrix = product.numpy().astype(np.float64, copy=False)  # A is read, never written
        finite_host = bool(np.isfinite(matrix).all())
        finite = torch.tensor(finite_host, device=xi.device)
        scale = np.sqrt(np.maximum(matrix.diagonal(), 0.0)).mean() ** 2
        if finite_host and scale > 0:  # a non-finite A keeps the state (see below) unscaled
            matrix = matrix / scale
        pull = self.regularization
        start = self._w
        w = start.cpu().numpy()
        # an overflowed (fp16) product leaves w as it was (the loss scaler skips the step)
        if finite_host:
            w = self._inner_steps(matrix, w)
        self._w = torch.from_numpy(w).to(start)
        weights = (self._w + pull / self.num_tasks) / (1.0 + pull)
        return weights.to(xi.device), finite

    def _inner_steps(self, matrix: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``inner_steps`` steps of projected SGD with momentum on the finite, scaled A."""
        if matrix.shape[0] > FLOAT_ROUTE_SIZE:
            return self._inner_steps_array(matrix, w)
        # A w stays NumPy's product (its rounding), the K-entry rest runs on Python floats:
        # the same IEEE operations as the numpy form (:meth:`_inner_steps_array`) with a third
        # of its numpy calls
        lr, momentum = self.inner_lr, self.inner_momentum
        pull_target = (self.regularization * matrix.mean(axis=1)).tolist()  # λ A·𝟙/K
        velocity: list[float] | None = None
        for _ in range(self.inner_steps):
            # ndarray.dot: the same product as @ (bit for bit), at half its dispatch cost
            gradient = [g + p for g, p in zip(matrix.dot(w).tolist(), pull_target)]
            velocity = (
                gradient
                if velocity is None
                else [momentum * v + g for v, g in zip(velocity, gradient)]
            )
            w = project_floats_onto_simplex([x - lr * v for x, v in zip(w.tolist(), velocity)])
        return w

    def _inner_steps_array(self, matrix: np.ndarray, w: np.ndarray) -> np.ndarray:
        """:meth:`_inner_steps` in numpy, for many tasks."""
        pull_target = self.regularization * matrix.mean(axis=1)  # λ A·𝟙/K, the same every step
        velocity: np.ndarray | None = None
        for _ in range(self.inner_steps):
            gradient = matrix.dot(w) + pull_target
            velocity = gradient if velocity is None else self.inner_momentum * velocity + gradient
            w = project_onto_simplex_array(w - self.inner_lr * velocity)
        return w

    def backward(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        jacobians, head_rows = batch_jacobians(
            losses, context, self.task_names, extra_batches=2, head_batch=0
        )
        count = len(jacobians)
        weights, finite = self._update(jacobians[1 % count], jacobians[2 % count])
        weights = weights.to(jacobians[0].dtype)
        write_gradients(context, self.task_names, weights, jacobians[0], head_rows, finite)
        return weights

    def state_dict(self) -> dict[str, Any]:
        return {"w": self._w.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._w = torch.as_tensor(state["w"], dtype=torch.float64).clone()
