"""Dynamic Weight Average (DWA).

Paper: S. Liu, E. Johns, A. J. Davison, "End-to-End Multi-Task Learning with Attention",
CVPR 2019, https://arxiv.org/abs/1803.10704 (§3.3).
Weight: in epoch e, c_k(e) = K · exp(r_k/T) / Σ_j exp(r_j/T) with r_k = L̄_k(e−1) / L̄_k(e−2),
where L̄_k(e) is the epoch mean of task k's unweighted training loss, weighted by batch size
(the value in ``train/loss/<task>``); c_k = 1 in the first two epochs. The weights sum to K and
are constant within an epoch, so ``weight/<task>`` can be recomputed from metrics.csv.
Hyperparameters: ``temperature`` T > 0 (paper: 2); a larger T flattens the weights towards 1.
State: the last two epoch means (saved with checkpoints).
Other implementations: LibMTL computes the same (batch-size-weighted epoch means). torchjd's DWA
scalarizer averages the batch losses without the batch-size weighting, and its user must call
``step()`` each epoch. A loose variant that circulates computes r from consecutive *steps* and
drops the factor K; it is not this method.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mtl_runner.errors import ConfigError
from mtl_runner.weighting.base import LossWeighting


class DWA(LossWeighting):
    def __init__(self, task_names: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(task_names)
        if not temperature > 0:
            raise ConfigError(
                f"weighting.temperature={temperature} is not allowed: it must be positive"
            )
        self.temperature = temperature
        self._history: list[torch.Tensor] = []  # L̄(e−2), L̄(e−1), float64 on CPU
        self._current = torch.ones(self.num_tasks, dtype=torch.float64)
        self._cached: torch.Tensor | None = None

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        # the weights change once per epoch: convert to the losses' device and dtype once
        if self._cached is None or self._cached.device != losses.device:
            self._cached = self._current.to(losses.device, losses.dtype)
        return self._cached

    def on_epoch_end(self, train_losses: torch.Tensor) -> None:
        self._history = [*self._history, train_losses.detach().to("cpu", torch.float64)][-2:]
        if len(self._history) == 2:
            self._current = self.weights_from_history(*self._history)
            self._cached = None

    def weights_from_history(self, older: torch.Tensor, newer: torch.Tensor) -> torch.Tensor:
        """c = K · softmax((L̄(e−1) / L̄(e−2)) / T)."""
        ratio = newer / older
        return self.num_tasks * torch.softmax(ratio / self.temperature, dim=0)

    def state_dict(self) -> dict[str, Any]:
        return {"history": [h.clone() for h in self._history], "weights": self._current.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._history = [torch.as_tensor(h, dtype=torch.float64) for h in state["history"]]
        self._current = torch.as_tensor(state["weights"], dtype=torch.float64)
        self._cached = None
