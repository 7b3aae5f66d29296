"""Fast adaptive multitask optimization (FAMO).

Paper: B. Liu, Y. Feng, P. Stone, Q. Liu, "FAMO: Fast Adaptive Multitask Optimization",
NeurIPS 2023,
https://proceedings.neurips.cc/paper_files/paper/2023/file/b2fe1ee8d936ac08dd26f2ff58986c8f-Paper-Conference.pdf
Weight: with task logits ξ, z = softmax(ξ), D_k = max(L_k − b_k, 0) + ε and
c = Σ_k z_k / D_k (detached), L_total = Σ_k z_k · log D_k / c. The logged c_k = ∂L_total/∂L_k =
z_k / (c·D_k), the true coefficient; the weights sum to 1. In the first step (ξ = 0) this is
inverse-loss weighting. A loss at or below its minimum b_k makes D_k = ε, which dominates c and
shrinks every other weight towards 0 (the paper assumes L_k > b_k); below b_k the task's own
coefficient is 0 (the clamp cuts its gradient).
After the optimizer step the trainer recomputes the same batch's losses L' (under no_grad) and
FAMO moves ξ so that the slowest-improving task gains weight:
δ_k = log D_k(L) − log D_k(L'), ξ.grad = J_softmax(ξ)ᵀ δ = z ⊙ δ − z·(zᵀδ), then one step of its
own Adam (β = (0.9, 0.999), ε = 1e-8, L2 weight decay added to the gradient, as torch.optim.Adam).
Hyperparameters: ``logit_lr`` (0.025, the paper's) — the learning rate of the Adam on ξ;
``logit_weight_decay`` (1e-3) — the regularisation γ of ξ (the paper's Algorithm and LibMTL;
the official code's default is 1e-5); ``min_losses`` b ([] = 0 for every task) — a lower bound
of each loss; ``eps`` ε (1e-8).
State: ξ and its Adam moments and step count (saved with checkpoints). ξ is not a model
parameter: it is not in ``parameters()`` and only its own Adam moves it.
Grad sources: n/a (loss-based: L_total is backpropagated once; heads get c_k ∇_head L_k). Costs
one extra forward pass per step (the losses after the step); ``train/loss/<task>`` still logs
the losses before each step only.
Other implementations: LibMTL's ``FAMO`` and torchjd's ``FAMO`` scalarizer compute the same
total and logit update, with D_k = L_k − b_k + ε unclamped (a loss below b_k gives NaN there).
LibMTL logs no weights, and its after-step forward is recorded in its training-loss meter, so
its logged training loss mixes the losses before and after each step. torchjd exposes no
weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mtl_runner.weighting._checks import require
from mtl_runner.weighting._loss import per_task
from mtl_runner.weighting.base import Combined, LossWeighting

_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


class FAMO(LossWeighting):
    def __init__(
        self,
        task_names: Sequence[str],
        logit_lr: float = 0.025,
        logit_weight_decay: float = 1e-3,
        min_losses: list[float] = [],  # noqa: B006 (the hyperparameter schema; never mutated)
        eps: float = 1e-8,
    ) -> None:
        super().__init__(task_names)
        require(logit_lr > 0, "logit_lr", logit_lr, "it must be positive")
        require(
            logit_weight_decay >= 0, "logit_weight_decay", logit_weight_decay, "it must be >= 0"
        )
        require(eps > 0, "eps", eps, "it must be positive")
        self.logit_lr = logit_lr
        self.logit_weight_decay = logit_weight_decay
        self.eps = eps
        self._min_losses = per_task("min_losses", min_losses, task_names, 0.0).float()
        self._logits = torch.zeros(self.num_tasks)
        self._exp_avg = torch.zeros(self.num_tasks)
        self._exp_avg_sq = torch.zeros(self.num_tasks)
        self._steps = 0
        self._before: torch.Tensor | None = None  # this step's losses, until after_step

    def _follow(self, losses: torch.Tensor) -> None:
        """Keep ξ, its moments and b on the losses' device (no host sync in the step)."""
        if self._logits.device != losses.device:
            self._logits = self._logits.to(losses.device)
            self._exp_avg = self._exp_avg.to(losses.device)
            self._exp_avg_sq = self._exp_avg_sq.to(losses.device)
            self._min_losses = self._min_losses.to(losses.device)

    def _shifted(self, losses: torch.Tensor) -> torch.Tensor:
        """D = max(L − b, 0) + ε."""
        return (losses - self._min_losses).clamp_min(0.0) + self.eps

    def combine(self, losses: torch.Tensor) -> Combined:
        self._follow(losses)
        z = torch.softmax(self._logits, dim=0).to(losses.dtype)
        shifted = self._shifted(losses)
        inverse = 1.0 / shifted.detach()
        normaliser = (z * inverse).sum()
        total = (z * shifted.log()).sum() / normaliser
        active = losses.detach() >= self._min_losses  # the clamp cuts the gradient below b
        weights = torch.where(active, z * inverse / normaliser, 0.0)
        self._before = losses.detach()
        return Combined(loss=total, weights=weights)

    def after_step(self, losses_after_step: Callable[[], torch.Tensor]) -> None:
        if self._before is None:
            return
        before, self._before = self._before, None
        with torch.no_grad():
            after = losses_after_step().detach()
            delta = (self._shifted(before).log() - self._shifted(after).log()).float()
            z = torch.softmax(self._logits, dim=0)
            self._adam_step(z * delta - z * (z * delta).sum())

    def _adam_step(self, grad: torch.Tensor) -> None:
        """One step of torch.optim.Adam (L2 weight decay) on ξ, written out for its state."""
        beta1, beta2 = _BETAS
        self._steps += 1
        grad = grad + self.logit_weight_decay * self._logits
        self._exp_avg = beta1 * self._exp_avg + (1 - beta1) * grad
        self._exp_avg_sq = beta2 * self._exp_avg_sq + (1 - beta2) * grad * grad
        correction1 = 1 - beta1**self._steps
        correction2 = 1 - beta2**self._steps
        denominator = self._exp_avg_sq.sqrt() / math.sqrt(correction2) + _ADAM_EPS
        self._logits = self._logits - (self.logit_lr / correction1) * self._exp_avg / denominator

    @property
    def logits(self) -> torch.Tensor:
        """The task logits ξ (z = softmax(ξ) are the task shares before the 1/D_k factor)."""
        return self._logits.clone()

    def state_dict(self) -> dict[str, Any]:
        return {
            "logits": self._logits.cpu().clone(),
            "exp_avg": self._exp_avg.cpu().clone(),
            "exp_avg_sq": self._exp_avg_sq.cpu().clone(),
            "steps": self._steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self._logits.device
        self._logits = torch.as_tensor(state["logits"], dtype=torch.float32).to(device).clone()
        self._exp_avg = torch.as_tensor(state["exp_avg"], dtype=torch.float32).to(device).clone()
        self._exp_avg_sq = (
            torch.as_tensor(state["exp_avg_sq"], dtype=torch.float32).to(device).clone()
        )
        self._steps = int(state["steps"])
        self._before = None
