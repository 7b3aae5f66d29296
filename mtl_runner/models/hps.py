"""Hard parameter sharing: one MLP trunk shared by all tasks, one linear head per task."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from mtl_runner.models._layers import check_dropout, check_sizes, mlp
from mtl_runner.models.base import MultiTaskModel
from mtl_runner.tasks import Task


class HardParameterSharing(MultiTaskModel):
    def __init__(
        self,
        in_features: int,
        tasks: Sequence[Task],
        hidden_sizes: Sequence[int] = (64, 32),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_sizes = check_sizes("hidden_sizes", hidden_sizes)
        self.trunk = mlp(in_features, hidden_sizes, activation, check_dropout(dropout))
        self.heads = nn.ModuleDict(
            {task.name: nn.Linear(hidden_sizes[-1], task.output_size) for task in tasks}
        )
        self.task_names = tuple(task.name for task in tasks)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        return self.trunk(features)

    def decode(
        self, shared: torch.Tensor, features: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return {name: head(shared) for name, head in self.heads.items()}

    def decode_task(
        self, task: str, shared: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.heads[task](shared)

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.trunk.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        return self.heads[task].parameters()
