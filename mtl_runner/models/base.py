"""The interface the trainer and the weighting methods rely on."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


class MultiTaskModel(nn.Module):
    """A network with a shared part and one output per task.

    ``encode`` maps inputs to the shared representation z, ``decode`` maps z to the task
    outputs; ``forward = decode ∘ encode``. Gradient-based weighting methods take per-task
    gradients either with respect to :meth:`shared_parameters` or with respect to z.

    Contract: the shared parameters act only through ``encode`` (z), and ``decode`` gives task
    k's output from z and task k's own parameters only. The parameter-level Jacobian is taken
    through z on this promise (∂L_k/∂θ = ∂L_k/∂z · ∂z/∂θ).
    """

    task_names: tuple[str, ...]

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, shared: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode_task(self, task: str, shared: torch.Tensor) -> torch.Tensor:
        """Task ``task``'s output from z alone; override when it is cheaper than ``decode``."""
        return self.decode(shared)[task]

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(self.encode(features))

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        raise NotImplementedError

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        raise NotImplementedError
