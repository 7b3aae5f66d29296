"""Gradient normalization (GradNorm).

Paper: Z. Chen, V. Badrinarayanan, C.-Y. Lee, A. Rabinovich, "GradNorm: Gradient Normalization
for Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018,
https://arxiv.org/abs/1711.02257 (Algorithm 1).
Weight: the task weights λ of this step, before they are updated (the shared parameters move
along d = Σ_k λ_k g_k, and the head of task k gets λ_k ∇_head L_k). λ = w, learnable, starting
at 1 (``parametrisation=direct``; after every optimizer step w is clamped to at least 1e-6 and
rescaled to Σw = K) or λ = K·softmax(w) (``softmax``). Each step also gives w the gradient of
L_grad = Σ_k |G_k − stopgrad(Ḡ·r_k^α)|, with G_k = ‖λ_k g_k‖ = λ_k‖g_k‖, Ḡ = mean_k G_k,
L̃_k = L_k/L_k(0) and r_k = L̃_k/mean_j L̃_j (only w receives it; the shared parameters get d).
The weights sum to K.
Hyperparameters: ``alpha`` α (1.5, LibMTL's default; the paper tunes α per dataset) — the
restoring force towards equal training rates; must be 0 or more (α = 0 equalises the gradient
norms). ``parametrisation`` (direct) — ``direct``: the paper's weights, renormalised after every
update; ``softmax``: LibMTL's K·softmax(w). ``initial_loss`` (first_step) — ``first_step``:
L_k(0) is the loss of the first step, as in the paper, and GradNorm acts from that step;
``first_epoch``: L_k(0) is the first epoch's mean training loss (``train/loss/<task>``) and the
first epoch keeps λ at 1 (plain equal weighting), as in LibMTL. ``grad_source``.
State: w (a learnable parameter: returned by ``parameters()``, so the trainer optimises it with
the model's optimizer, learning rate and weight decay in a group of its own, as LibMTL does; the
optimizer's state for it is saved with the optimizer's), L(0) and the number of finished epochs
(saved in ``state_dict``).
Grad sources: ``params`` — G_k is the norm of the gradient w.r.t. all shared parameters (the
paper uses only the last shared layer, to save computation); ``features`` — w.r.t. the batch's
shared representation z (a cheap proxy for the last shared layer).
Other implementations: LibMTL's GradNorm is ``parametrisation=softmax``,
``initial_loss=first_epoch``, with all shared parameters (or the representation, summed over the
batch); its heads get unweighted gradients. torchjd has no GradNorm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

import numpy as np
import torch

from mtl_runner.weighting._checks import require
from mtl_runner.weighting._parameters import follow_device, load_parameter
from mtl_runner.weighting.base import StepContext
from mtl_runner.weighting.gradients import (
    Aggregation,
    GradientWeighting,
    GradSource,
    accumulate_gradient,
)

_MIN_WEIGHT = 1e-6  # the direct weights are kept positive (G_k = λ_k‖g_k‖ needs λ_k > 0)
_TINY = float(np.finfo(np.float64).tiny)
_LARGEST = float(np.finfo(np.float64).max)


class Parametrisation(str, Enum):
    direct = "direct"
    softmax = "softmax"


class InitialLoss(str, Enum):
    first_step = "first_step"
    first_epoch = "first_epoch"


class GradNorm(GradientWeighting):
    def __init__(
        self,
        task_names: Sequence[str],
        alpha: float = 1.5,
        parametrisation: Parametrisation = Parametrisation.direct,
        initial_loss: InitialLoss = InitialLoss.first_step,
        grad_source: GradSource = GradSource.params,
    ) -> None:
        super().__init__(task_names, grad_source)
        require(math.isfinite(alpha) and alpha >= 0, "alpha", alpha, "it must be 0 or more")
        self.alpha = float(alpha)
        self.parametrisation = Parametrisation(parametrisation)
        self.initial_loss = InitialLoss(initial_loss)
        self.raw_weights = torch.nn.Parameter(torch.ones(self.num_tasks))
        self._initial_losses: torch.Tensor | None = None  # L(0), float64 CPU
        self._epochs = 0
        self._pending_grad: torch.Tensor | None = None

    def task_weights(self) -> torch.Tensor:
        """λ as a function of w (differentiable, also where grad mode is off)."""
        if self.parametrisation is Parametrisation.softmax:
            with torch.enable_grad():
                return self.num_tasks * torch.softmax(self.raw_weights, dim=0)
        return self.raw_weights

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        follow_device(self.raw_weights, jacobian)
        losses = losses.detach().to("cpu", torch.float64)
        self._pending_grad = None
        if self._initial_losses is None and self.initial_loss is InitialLoss.first_step:
            self._initial_losses = losses.clone()
        weights = self.task_weights()
        if self._initial_losses is not None:
            self._pending_grad = self._balance_gradient(weights, jacobian, losses.numpy())
        # a copy: λ = w itself would be changed by the optimizer step after it has been logged
        return Aggregation(weights=weights.detach().to(jacobian.device, jacobian.dtype, copy=True))

    def _balance_gradient(
        self, weights: torch.Tensor, jacobian: torch.Tensor, losses: np.ndarray
    ) -> torch.Tensor:
        """∂L_grad/∂w. The targets are held constant, so ∂L_grad/∂λ_k = sign(G_k − Ḡ·r_k^α)·‖g_k‖,
        formed in float64 as autograd forms it (sign 0 at 0 and at NaN), then chained through λ(w).
        """
        norms = torch.linalg.vector_norm(jacobian.detach(), dim=1, dtype=torch.float64)
        norms = norms.cpu().numpy()
        with np.errstate(invalid="ignore", over="ignore"):  # overflowed gradients: NaN, silently
            gradient_norms = weights.detach().cpu().numpy().astype(np.float64) * norms  # G_k
            mean = float(gradient_norms.sum()) / len(gradient_norms)  # Ḡ
            targets = mean * self._rates(losses) ** self.alpha
            difference = gradient_norms - targets
            grad = np.where(np.isnan(difference), 0.0, np.sign(difference)) * norms
        grad = torch.from_numpy(grad).to(self.raw_weights.device, self.raw_weights.dtype)
        if self.parametrisation is Parametrisation.direct:  # λ = w
            return grad
        (grad,) = torch.autograd.grad(weights, self.raw_weights, grad)
        return grad

    def _rates(self, losses: np.ndarray) -> np.ndarray:
        """r_k = L̃_k / mean_j L̃_j with L̃_k = L_k / L_k(0) (1 where that is undefined)."""
        ratios = losses / np.maximum(self._initial_losses.numpy(), _TINY)
        ratios = np.minimum(np.maximum(ratios, 0.0), _LARGEST)  # NaN stays NaN
        ratios[np.isnan(ratios)] = 1.0
        mean = float(ratios.sum()) / len(ratios)
        if not (math.isfinite(mean) and mean > 0):
            return np.ones_like(ratios)
        return ratios / mean

    def backward(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        weights = super().backward(losses, context)
        if self._pending_grad is not None:
            accumulate_gradient(self.raw_weights, self._pending_grad * context.loss_scale)
            self._pending_grad = None
        return weights

    def after_step(self, losses_after_step: Callable[[], torch.Tensor]) -> None:
        if self.parametrisation is Parametrisation.direct:  # the paper's renormalisation
            with torch.no_grad():
                weights = self.raw_weights.clamp_min(_MIN_WEIGHT)
                self.raw_weights.copy_(weights * (self.num_tasks / weights.sum()))

    def on_epoch_end(self, train_losses: torch.Tensor) -> None:
        self._epochs += 1
        if self._epochs == 1 and self.initial_loss is InitialLoss.first_epoch:
            self._initial_losses = train_losses.detach().to("cpu", torch.float64).clone()

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.raw_weights]

    def state_dict(self) -> dict[str, Any]:
        initial = self._initial_losses
        return {
            "raw_weights": self.raw_weights.detach().cpu().clone(),
            "initial_losses": None if initial is None else initial.clone(),
            "epochs": self._epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parameter(self.raw_weights, state["raw_weights"])
        initial = state["initial_losses"]
        self._initial_losses = (
            None if initial is None else torch.as_tensor(initial, dtype=torch.float64).clone()
        )
        self._epochs = int(state["epochs"])
