"""Hard parameter sharing: one MLP trunk shared by all tasks, one linear head per task."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from mtl_runner.errors import ConfigError
from mtl_runner.models.base import MultiTaskModel
from mtl_runner.schema import Activation
from mtl_runner.tasks import Task

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


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
        hidden_sizes = [int(size) for size in hidden_sizes]
        if not hidden_sizes or min(hidden_sizes) < 1:
            raise ConfigError(
                f"model.hidden_sizes={hidden_sizes} is not allowed: "
                "give one or more positive widths"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout} is not allowed: use 0 <= dropout < 1")
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), _ACTIVATIONS[Activation(activation).value]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict(
            {task.name: nn.Linear(width, task.output_size) for task in tasks}
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
