"""Multi-task learning with excess risks (ExcessMTL).

Paper: Y. He, S. Zhou, G. Zhang, H. Yun, Y. Xu, B. Zeng, T. Chilimbi, H. Zhao, "Robust
Multi-Task Learning with Excess Risks", ICML 2024, https://arxiv.org/abs/2402.02009
(Algorithm 1; Eqs. 6, 7 and 9; scale processing in §3.2).
Weight: the task weights λ themselves (the shared parameters move along d = Σ_k λ_k g_k). Each
call accumulates S_k += g_k ⊙ g_k (elementwise, over the whole run) and estimates task k's
excess risk as E_k = Σ_j g_kj² / √(S_kj + 1e-7) (a second-order Taylor expansion with the
AdaGrad diagonal as Hessian). The first estimate (or the mean over the warm-up calls) is kept as
the baseline E_k⁰; from then on λ_k ← λ_k·exp(η·E_k/E_k⁰), renormalised to Σλ = 1 (or K). On
the baseline call E/E⁰ = 1 for every task, so that update leaves λ unchanged; λ starts uniform.
The update runs in log space, so a task whose baseline is zero saturates λ instead of
overflowing. A call whose gradients are not finite (an overflow, e.g. a step the fp16 loss
scaler will skip) returns λ and changes no statistic.
Hyperparameters: ``step_size`` η (0.01, the authors' code and LibMTL; torchjd's default is 1.0)
— must be positive. ``weight_sum`` (one) — ``one``: λ on the simplex, starting at 1/K (the
paper's α, torchjd); ``num_tasks``: λ sums to K, starting at 1 (the authors' code, LibMTL). Only
the scale of d changes. ``warmup_steps`` (0) — calls during which λ stays uniform while S and
the mean estimate are collected; the baseline is then that mean (the paper's Appendix C.1
suggests three epochs of statistics; torchjd's ``n_warmup_steps``). ``update_on_first_step``
(false) — true: with no warm-up, the baseline call also updates λ with the raw, un-normalised
estimate E (torchjd's behaviour with ``n_warmup_steps=0``). ``grad_source``.
State: λ (as log-weights), S ([K, D], D = the number of shared parameters), the baseline E⁰, the
warm-up sum of E, and the number of calls (all saved with checkpoints).
Grad sources: ``params`` only: S accumulates per parameter across steps, while the entries of
∂L_k/∂z belong to different samples in every batch (and the last batch of an epoch is smaller).
Other implementations: the authors' code (a LibMTL fork) and LibMTL are
``weight_sum=num_tasks`` with η = 0.01: the first call only sets the baseline; they weight the
heads by λ too. torchjd's ExcessMTLWeighting is ``weight_sum=one``, ``step_size=1.0``,
``update_on_first_step=true`` (with ``warmup_steps=0``); it divides by E⁰ + 1e-7 instead of
E⁰, which matters only when the baseline is tiny, and its heads get unweighted gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum
from typing import Any

import torch

from mtl_runner.weighting._checks import require
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource

_HESSIAN_EPS = 1e-7  # inside the square root of the AdaGrad diagonal (Eq. 7, both anchors)
_MAX_EXPONENT = 1e300  # caps η·E/E⁰ so a zero baseline saturates instead of giving inf − inf


class WeightSum(str, Enum):
    one = "one"
    num_tasks = "num_tasks"


class ExcessMTL(GradientWeighting):
    supported_sources = frozenset({GradSource.params})

    def __init__(
        self,
        task_names: Sequence[str],
        step_size: float = 0.01,
        weight_sum: WeightSum = WeightSum.one,
        warmup_steps: int = 0,
        update_on_first_step: bool = False,
        grad_source: GradSource = GradSource.params,
    ) -> None:
        super().__init__(task_names, grad_source)
        require(
            math.isfinite(step_size) and step_size > 0,
            "step_size",
            step_size,
            "it must be a positive number",
        )
        require(warmup_steps >= 0, "warmup_steps", warmup_steps, "it must be 0 or more")
        require(
            not (update_on_first_step and warmup_steps > 0),
            "update_on_first_step",
            update_on_first_step,
            "it applies only with warmup_steps=0 (after a warm-up the first update already "
            "uses the normalised estimate)",
        )
        self.step_size = float(step_size)
        self.weight_sum = WeightSum(weight_sum)
        self.warmup_steps = int(warmup_steps)
        self.update_on_first_step = bool(update_on_first_step)
        self._log_weights = torch.full(
            (self.num_tasks,), -math.log(self.num_tasks), dtype=torch.float64
        )
        self._squared_sum: torch.Tensor | None = None  # S, [K, D], on the Jacobian's device
        self._baseline: torch.Tensor | None = None  # E⁰, float64 CPU
        self._warmup_sum = torch.zeros(self.num_tasks, dtype=torch.float64)
        self._calls = 0

    @property
    def weights(self) -> torch.Tensor:
        """The current λ (float64, CPU)."""
        total = 1.0 if self.weight_sum is WeightSum.one else float(self.num_tasks)
        return total * torch.exp(self._log_weights)

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        excess = self._excess_risks(jacobian.detach())
        if excess is None:  # an overflowed gradient: λ stays, and so does every statistic
            return Aggregation(weights=self.weights.to(jacobian.device, jacobian.dtype))
        self._calls += 1
        if self._calls <= self.warmup_steps:
            self._warmup_sum += excess
        elif self._baseline is None:
            if self.warmup_steps > 0:
                self._baseline = self._warmup_sum / self.warmup_steps
                self._update(excess / self._baseline)
            else:
                self._baseline = excess
                if self.update_on_first_step:
                    self._update(excess)
        else:
            self._update(excess / self._baseline)
        return Aggregation(weights=self.weights.to(jacobian.device, jacobian.dtype))

    def _excess_risks(self, jacobian: torch.Tensor) -> torch.Tensor | None:
        """E_k = Σ_j g_kj² / √(S_kj + 1e-7) after adding g² to S (float64, CPU); None, with S
        unchanged, when a gradient is not finite (S would stay infinite for the whole run)."""
        squared = jacobian * jacobian
        if self._squared_sum is None or self._squared_sum.shape != squared.shape:
            if self._squared_sum is not None:
                raise ValueError(
                    f"ExcessMTL: the Jacobian changed shape from {tuple(self._squared_sum.shape)} "
                    f"to {tuple(squared.shape)}"
                )
            self._squared_sum = torch.zeros_like(squared)
        if self._squared_sum.device != squared.device:
            self._squared_sum = self._squared_sum.to(squared.device)
        squared_sum = self._squared_sum + squared.to(self._squared_sum.dtype)
        scaled = squared / torch.sqrt(squared_sum + _HESSIAN_EPS)
        excess = scaled.sum(dim=1, dtype=torch.float64).cpu()
        if not torch.isfinite(excess).all():  # inf/inf or a NaN: no statistic to keep
            return None
        self._squared_sum = squared_sum
        return excess

    def _update(self, ratio: torch.Tensor) -> None:
        """log λ ← log λ + η·ratio, renormalised (λ ← λ·exp(η·ratio) / Σ)."""
        ratio = torch.nan_to_num(ratio, nan=0.0, posinf=_MAX_EXPONENT)
        exponent = (self.step_size * ratio).clamp(max=_MAX_EXPONENT)
        self._log_weights = torch.log_softmax(self._log_weights + exponent, dim=0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "log_weights": self._log_weights.clone(),
            "squared_sum": None if self._squared_sum is None else self._squared_sum.clone(),
            "baseline": None if self._baseline is None else self._baseline.clone(),
            "warmup_sum": self._warmup_sum.clone(),
            "calls": self._calls,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._log_weights = torch.as_tensor(state["log_weights"], dtype=torch.float64).clone()
        squared_sum = state["squared_sum"]
        self._squared_sum = None if squared_sum is None else torch.as_tensor(squared_sum).clone()
        baseline = state["baseline"]
        self._baseline = (
            None if baseline is None else torch.as_tensor(baseline, dtype=torch.float64).clone()
        )
        self._warmup_sum = torch.as_tensor(state["warmup_sum"], dtype=torch.float64).clone()
        self._calls = int(state["calls"])
