"""Building blocks of the mixture-of-experts architectures (MMoE, CGC, PLE).

Towers, banks of expert MLPs, softmax gates over an input, one extraction level of CGC/PLE and
the layout of the shared representation z as named blocks (MLPs and size checks:
:mod:`mtl_runner.models._layers`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from mtl_runner.models._layers import mlp
from mtl_runner.models.base import MultiTaskModel
from mtl_runner.tasks import Task


def tower(
    in_features: int, sizes: Sequence[int], out_features: int, activation: str, dropout: float
) -> nn.Sequential:
    """A task's tower: the hidden layers of ``sizes``, then a linear output layer."""
    body = mlp(in_features, sizes, activation, dropout)
    width = sizes[-1] if sizes else in_features
    return nn.Sequential(*body, nn.Linear(width, out_features))


class ExpertBank(nn.Module):
    """``count`` expert MLPs on the same input; the output stacks them: [B, count, width]."""

    def __init__(
        self, count: int, in_features: int, sizes: Sequence[int], activation: str, dropout: float
    ) -> None:
        super().__init__()
        self.count = count
        self.width = sizes[-1]
        self.experts = nn.ModuleList(
            mlp(in_features, sizes, activation, dropout) for _ in range(count)
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.count:
            return inputs.new_zeros(inputs.shape[0], 0, self.width)
        return torch.stack([expert(inputs) for expert in self.experts], dim=1)


class Gate(nn.Module):
    """Softmax weights over ``count`` experts from the gate's input: softmax(W x), [B, count].

    No bias, as in the MMoE paper's g_k(x) = softmax(W_gk x) and the PLE paper's gates."""

    def __init__(self, in_features: int, count: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, count, bias=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(inputs), dim=-1)


def mix(weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Σ_e weights[:, e] · experts[:, e]: [B, E] and [B, E, width] → [B, width]."""
    return torch.einsum("be,bew->bw", weights.to(experts.dtype), experts)


class ExtractionLevel(nn.Module):
    """One extraction level of CGC/PLE: shared experts, ``task_experts`` experts per task,
    task k's gate over the shared and task k's experts, and (``shared_gate``) a gate over all
    the experts for the shared path. The shared experts and the shared gate read the shared
    input, task k's experts and gate read task k's input (at the first level both are x)."""

    def __init__(
        self,
        task_names: Sequence[str],
        shared_experts: int,
        task_experts: int,
        in_features: int,
        expert_sizes: Sequence[int],
        activation: str,
        dropout: float,
        shared_gate: bool,
    ) -> None:
        super().__init__()
        self.shared_experts = ExpertBank(
            shared_experts, in_features, expert_sizes, activation, dropout
        )
        self.task_experts = nn.ModuleDict(
            {
                name: ExpertBank(task_experts, in_features, expert_sizes, activation, dropout)
                for name in task_names
            }
        )
        self.gates = nn.ModuleDict(
            {name: Gate(in_features, shared_experts + task_experts) for name in task_names}
        )
        everything = shared_experts + len(task_names) * task_experts
        self.shared_gate = Gate(in_features, everything) if shared_gate else None

    def experts(
        self, shared_input: torch.Tensor, task_inputs: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The shared experts' outputs [B, S, d] and task k's experts' outputs [B, T, d]."""
        return self.shared_experts(shared_input), {
            name: bank(task_inputs[name]) for name, bank in self.task_experts.items()
        }

    def task_output(
        self, task: str, gate_input: torch.Tensor, shared: torch.Tensor, own: torch.Tensor
    ) -> torch.Tensor:
        """Task ``task``'s gate (on ``gate_input``) over its shared and own experts: [B, d]."""
        return mix(self.gates[task](gate_input), torch.cat([shared, own], dim=1))

    def forward(
        self, shared_input: torch.Tensor, task_inputs: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The shared path's output (None without a shared gate) and every task's output."""
        shared, own = self.experts(shared_input, task_inputs)
        outputs = {
            name: self.task_output(name, task_inputs[name], shared, own[name]) for name in own
        }
        if self.shared_gate is None:
            return None, outputs
        everything = torch.cat([shared, *own.values()], dim=1)
        return mix(self.shared_gate(shared_input), everything), outputs


class Layout:
    """The shared representation z as named blocks, flattened side by side: [B, Σ n·width].

    A block holds ``n`` vectors of ``width`` (n expert outputs, or n = 1 for a gate's input)."""

    def __init__(self) -> None:
        self._blocks: dict[str, tuple[int, int, int]] = {}
        self.width = 0

    def add(self, name: str, count: int, width: int) -> None:
        self._blocks[name] = (self.width, count, width)
        self.width += count * width

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._blocks)

    def pack(self, blocks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """z from the blocks ([B, n, width] or [B, width]), in the order they were added."""
        return torch.cat([blocks[name].flatten(1) for name in self._blocks], dim=1)

    def block(self, shared: torch.Tensor, name: str) -> torch.Tensor:
        """Block ``name`` of z as [B, n, width]."""
        start, count, width = self._blocks[name]
        return shared[:, start : start + count * width].unflatten(1, (count, width))


class MixtureOfExperts(MultiTaskModel):
    """What the three architectures have in common: towers, decode and a parameter count."""

    towers: nn.ModuleDict

    def _make_towers(
        self,
        tasks: Sequence[Task],
        in_features: int,
        tower_sizes: Sequence[int],
        activation: str,
        dropout: float,
    ) -> None:
        self.towers = nn.ModuleDict(
            {
                task.name: tower(in_features, tower_sizes, task.output_size, activation, dropout)
                for task in tasks
            }
        )
        self.task_names = tuple(task.name for task in tasks)

    def decode(
        self, shared: torch.Tensor, features: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return {name: self.decode_task(name, shared, features) for name in self.task_names}

    def num_parameters(self) -> int:
        """The number of trainable scalars (the README's parameter counts)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _shared_modules(self) -> Iterator[nn.Module]:
        """The modules of ``encode``."""
        raise NotImplementedError

    def _task_modules(self, task: str) -> Iterator[nn.Module]:
        """Task ``task``'s modules in ``decode_task`` (its gate and tower)."""
        raise NotImplementedError

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        for module in self._shared_modules():
            yield from module.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        for module in self._task_modules(task):
            yield from module.parameters()


def require_features(features: torch.Tensor | None, model: str) -> torch.Tensor:
    if features is None:
        raise TypeError(f"{model}.decode needs the batch's features: its gates read the input")
    return features
