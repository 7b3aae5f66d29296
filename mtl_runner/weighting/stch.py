"""Smooth Tchebycheff scalarization (STCH).

Paper: X. Lin, X. Zhang, Z. Yang, F. Liu, Z. Wang, Q. Zhang, "Smooth Tchebycheff Scalarization
for Multi-Objective Optimization", ICML 2024, https://arxiv.org/abs/2402.19078.
Weight: the paper's scalarization of the objectives f_k,
L_total = μ · log Σ_k exp(λ_k (f_k − z*_k) / μ), a smooth maximum of λ_k (f_k − z*_k) (computed
with a stable logsumexp). By default f_k = L_k, the batch's task loss. The logged c_k is the
true ∂L_total/∂L_k = λ_k · softmax_k(λ (f − z*) / μ) · ∂f_k/∂L_k — the task the smooth max
currently sees as the worst gets the most weight; with ∂f/∂L = 1 the weights sum to at most
max_k λ_k. Options change f and the total:
``normalize_by_nadir`` divides L_k by the nadir n_k (∂f_k/∂L_k = 1/n_k), ``log_losses`` takes
f_k = log(·) (∂f_k/∂L_k = 1/L_k, with or without the nadir), ``multiply_by_num_tasks`` multiplies
the total, and so c, by K. During the first ``warmup_epochs`` epochs the total is Σ_k f_k (the
plain sum, or Σ_k log L_k with ``log_losses``), so c_k = 1 or 1/L_k.
Hyperparameters:
- ``smoothing`` μ > 0 (1.0): smaller is closer to the hard maximum. The paper fixes no single
  value (it compares μ ∈ {0.01, 0.1, 0.5, 1}); 1.0 is the default of its multi-task code
  (Xi-L/STCH, STCH_mu), which LibMTL copies.
- ``preference`` λ ([] = 1/K for every task, the uniform point of the paper's simplex): one
  non-negative number per task, used as given (not renormalised).
- ``ideal_point`` z* ([] = 0 for every task, a lower bound of non-negative losses): subtracted
  from f (after the nadir division and the logarithm, if those are on).
- ``log_losses`` (false), ``warmup_epochs`` (0), ``normalize_by_nadir`` (false; needs
  ``warmup_epochs`` ≥ 1: n is the last warm-up epoch's mean training loss, ``train/loss/<task>``),
  ``multiply_by_num_tasks`` (false) — the multi-task variant of the paper's code, see below.
State: the number of epochs completed and the nadir n (saved with checkpoints).
Grad sources: n/a (loss-based: L_total is backpropagated once; heads get c_k ∇_head L_k).
Other implementations:
- LibMTL's ``STCH`` (from the paper's code) runs Σ_k log L_k for its 0-based epochs
  0…STCH_warmup_epoch (4), averages the batch losses of the last of them into the nadir n, then
  backpropagates K·μ·logsumexp(log(L/n)/μ) with λ = 1. That is ``log_losses=true
  normalize_by_nadir=true warmup_epochs=5 preference=[1,…,1] multiply_by_num_tasks=true`` here
  (LibMTL's warm-up of 4 is 5 epochs; its nadir is the unweighted mean over batches, ours is
  batch-size weighted). LibMTL logs ones, not the applied weights.
- torchjd's ``STCH`` scalarizer is the paper form, as the default here (``mu`` is required
  there; ``weights`` = λ, default 1/K; ``reference`` = z*), with no warm-up, nadir or logarithm;
  it exposes no weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mtl_runner.weighting._checks import require
from mtl_runner.weighting._loss import per_task
from mtl_runner.weighting.base import Combined, LossWeighting

_FLOOR = 1e-20  # smallest argument of the logarithm and smallest nadir (LibMTL adds 1e-20)


class STCH(LossWeighting):
    # true for the default uniform preference and ideal point, which the property suite checks;
    # a per-task preference or ideal point belongs to task positions
    permutation_invariant = True

    def __init__(
        self,
        task_names: Sequence[str],
        smoothing: float = 1.0,
        preference: list[float] = [],  # noqa: B006 (the hyperparameter schema; never mutated)
        ideal_point: list[float] = [],  # noqa: B006
        log_losses: bool = False,
        warmup_epochs: int = 0,
        normalize_by_nadir: bool = False,
        multiply_by_num_tasks: bool = False,
    ) -> None:
        super().__init__(task_names)
        require(smoothing > 0, "smoothing", smoothing, "it must be positive")
        self._preference = per_task("preference", preference, task_names, 1.0 / self.num_tasks)
        require(
            bool((self._preference >= 0).all()) and float(self._preference.sum()) > 0,
            "preference",
            list(preference),
            "entries must be non-negative and at least one must be positive",
        )
        self._ideal_point = per_task("ideal_point", ideal_point, task_names, 0.0)
        require(warmup_epochs >= 0, "warmup_epochs", warmup_epochs, "it must be 0 or more")
        require(
            not normalize_by_nadir or warmup_epochs >= 1,
            "normalize_by_nadir",
            normalize_by_nadir,
            "it needs warmup_epochs >= 1 (the nadir is the last warm-up epoch's mean loss)",
        )
        self.smoothing = float(smoothing)
        self.log_losses = log_losses
        self.warmup_epochs = warmup_epochs
        self.normalize_by_nadir = normalize_by_nadir
        self.multiply_by_num_tasks = multiply_by_num_tasks
        self._epochs_completed = 0
        self._nadir = torch.ones(self.num_tasks, dtype=torch.float64)
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def in_warmup(self) -> bool:
        return self._epochs_completed < self.warmup_epochs

    def _constants(self, losses: torch.Tensor) -> dict[str, torch.Tensor]:
        """λ, z* and the nadir on the losses' device and dtype, converted once."""
        cached = self._cache.get("preference")
        if cached is None or cached.device != losses.device or cached.dtype != losses.dtype:
            convert = {"device": losses.device, "dtype": losses.dtype}
            self._cache = {
                "preference": self._preference.to(**convert),
                "ideal_point": self._ideal_point.to(**convert),
                "nadir": self._nadir.to(**convert),
            }
        return self._cache

    def combine(self, losses: torch.Tensor) -> Combined:
        constants = self._constants(losses)
        objective = losses
        slope = torch.ones_like(losses.detach())  # ∂f_k/∂L_k
        if self.normalize_by_nadir and not self.in_warmup:
            objective = objective / constants["nadir"]
            slope = slope / constants["nadir"]
        if self.log_losses:
            inner = objective.clamp_min(_FLOOR)
            kept = objective.detach() >= _FLOOR  # the clamp cuts the gradient below the floor
            slope = torch.where(kept, slope / inner.detach(), 0.0)
            objective = inner.log()
        if self.in_warmup:
            return Combined(loss=objective.sum(), weights=slope)
        preference = constants["preference"]
        scaled = preference * (objective - constants["ideal_point"]) / self.smoothing
        total = self.smoothing * torch.logsumexp(scaled, dim=0)
        weights = preference * torch.softmax(scaled.detach(), dim=0) * slope
        if self.multiply_by_num_tasks:
            total = total * self.num_tasks
            weights = weights * self.num_tasks
        return Combined(loss=total, weights=weights)

    def on_epoch_end(self, train_losses: torch.Tensor) -> None:
        self._epochs_completed += 1
        if self.normalize_by_nadir and self._epochs_completed == self.warmup_epochs:
            nadir = train_losses.detach().to("cpu", torch.float64)
            self._nadir = nadir.clamp_min(_FLOOR)
            self._cache = {}

    def state_dict(self) -> dict[str, Any]:
        return {"epochs_completed": self._epochs_completed, "nadir": self._nadir.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._epochs_completed = int(state["epochs_completed"])
        self._nadir = torch.as_tensor(state["nadir"], dtype=torch.float64).clone()
        self._cache = {}
