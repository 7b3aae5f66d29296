"""The interface the trainer and the weighting methods rely on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import nn


class MultiTaskModel(nn.Module):
    """A network with a shared part and one output per task.

    ``encode`` maps inputs to the shared representation z, ``decode`` maps z to the task
    outputs; ``forward = decode ∘ encode``. Gradient-based weighting methods take per-task
    gradients either with respect to :meth:`shared_parameters` or with respect to z.

    Contract: the shared parameters are the parameters of ``encode`` and act only through z;
    ``decode`` gives task k's output from z, the batch's input features (which a per-task gate
    may read, as MMoE's do) and task k's own parameters only. The parameter-level Jacobian is
    taken through z on this promise (∂L_k/∂θ = ∂L_k/∂z · ∂z/∂θ).
    """

    task_names: tuple[str, ...]
    #: whether ∂L_k/∂z is a meaningful per-task gradient (``grad_source=features``): False for
    #: architectures whose z is one block per task, where every task's row lives in its own block
    feature_gradients: ClassVar[bool] = True

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(
        self, shared: torch.Tensor, features: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode_task(
        self, task: str, shared: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Task ``task``'s output from z (and the input); override when cheaper than decode."""
        return self.decode(shared, features)[task]

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(self.encode(features), features)

    def regularization(self) -> torch.Tensor | None:
        """A loss term of the architecture itself (e.g. DSelect-k's entropy penalty), added to
        the training objective after the weighting method's backward, or None. It is computed
        from the model's parameters of the last forward, never with a backward inside forward."""
        return None

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        raise NotImplementedError

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        raise NotImplementedError
