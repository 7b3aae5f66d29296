"""Cross-stitch network (cross_stitch).

Paper: Ishan Misra, Abhinav Shrivastava, Abhinav Gupta, Martial Hebert, "Cross-stitch Networks
for Multi-task Learning", CVPR 2016, https://arxiv.org/abs/1604.03539

One MLP column per task. After every hidden layer a learned cross-stitch unit mixes the K
columns' activations, x̃_k = Σ_j α_kj x_j, and the next layer of column k reads x̃_k. Column k
ends in task k's linear head.

- ``stitch: layer`` (default): one K×K matrix α per unit, the form of the paper's Eq. (1) (one
  α_S/α_D pair per unit for two tasks); ``stitch: channel``: one K×K matrix per hidden unit
  of the layer, x̃_k[c] = Σ_j α_kj[c] x_j[c] (the per-channel variant; K²·width scalars).
- Initialisation as in the paper's ablation (α_S/α_D such as 0.9/0.1): α_kk =
  ``self_weight`` (0.9), the rest 1 - ``self_weight`` split evenly over the other columns, so
  every row is a convex combination. With one task (``mode=single_task``) α = 1.
  ``self_weight: 1`` starts from K independent MLPs.

Shared: every column influences every task through the stitches, so all columns and all
stitch units are shared parameters (``encode``); only the K linear heads are task parameters.
z = the K columns' last (stitched) activations concatenated, [B, K·d] with d the last width;
task k's head reads column k's block.

Grad sources: ``params`` only. With that z, ∂L_k/∂z is non-zero only in task k's own block, so
the per-task rows of ``grad_source=features`` never meet (MGDA-UB's min-norm point, PCGrad's
projections, … would be trivial): ``feature_gradients = False`` and run.py refuses the pair.

Differences from the paper: MLP columns (``hidden_sizes``, default [64, 32], the HPS trunk's
widths) instead of two AlexNets with units after the pooling and fully-connected layers; the
columns are initialised at random, not from single-task networks trained first; the α are
trained with the same learning rate as the rest (the paper scales the units' rate up by 10²–10³);
K ≥ 2 columns rather than two. With K columns of the HPS width the parameter count is ~K× the
HPS model's (8,700 vs 3,114 at the defaults on the default dataset).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from mtl_runner.errors import ConfigError
from mtl_runner.models._layers import activation_layer, check_dropout, check_sizes
from mtl_runner.models.base import MultiTaskModel
from mtl_runner.schema import StitchType
from mtl_runner.tasks import Task


def stitch_init(tasks: int, self_weight: float, channels: int | None = None) -> torch.Tensor:
    """α at initialisation: ``self_weight`` on the diagonal, the rest split evenly ([K, K], or
    [K, K, channels] for per-channel units); with one task, 1."""
    if tasks == 1:
        alpha = torch.ones(1, 1)
    else:
        alpha = torch.full((tasks, tasks), (1.0 - self_weight) / (tasks - 1))
        alpha.fill_diagonal_(self_weight)
    if channels is not None:
        alpha = alpha.unsqueeze(-1).repeat(1, 1, channels)
    return alpha


class CrossStitch(MultiTaskModel):
    feature_gradients = False

    def __init__(
        self,
        in_features: int,
        tasks: Sequence[Task],
        hidden_sizes: Sequence[int] = (64, 32),
        activation: str = "relu",
        dropout: float = 0.0,
        stitch: str = "layer",
        self_weight: float = 0.9,
    ) -> None:
        super().__init__()
        hidden_sizes = check_sizes("hidden_sizes", hidden_sizes)
        dropout = check_dropout(dropout)
        if not 0.0 <= self_weight <= 1.0:
            raise ConfigError(
                f"model.self_weight={self_weight} is not allowed: use 0 <= self_weight <= 1 "
                "(each column's weight on itself at initialisation)"
            )
        self.stitch = StitchType(stitch)
        self.task_names = tuple(task.name for task in tasks)
        count = len(self.task_names)
        # layers[l][k]: column k's l-th linear layer; alphas[l]: the unit after layer l
        self.layers = nn.ModuleList()
        self.alphas = nn.ParameterList()
        width = in_features
        for size in hidden_sizes:
            self.layers.append(nn.ModuleList(nn.Linear(width, size) for _ in range(count)))
            channels = size if self.stitch is StitchType.channel else None
            self.alphas.append(nn.Parameter(stitch_init(count, self_weight, channels)))
            width = size
        self.activation = activation_layer(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.width = width
        self.heads = nn.ModuleDict(
            {task.name: nn.Linear(width, task.output_size) for task in tasks}
        )

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        columns = [features] * len(self.task_names)
        for layers, alpha in zip(self.layers, self.alphas):
            stacked = torch.stack(
                [self.dropout(self.activation(layer(x))) for layer, x in zip(layers, columns)]
            )  # [K, B, d]
            if self.stitch is StitchType.channel:
                mixed = torch.einsum("kjd,jbd->kbd", alpha.to(stacked.dtype), stacked)
            else:
                mixed = torch.einsum("kj,jbd->kbd", alpha.to(stacked.dtype), stacked)
            columns = list(mixed.unbind(0))
        return torch.cat(columns, dim=1)

    def decode(
        self, shared: torch.Tensor, features: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return {name: self.decode_task(name, shared, features) for name in self.task_names}

    def decode_task(
        self, task: str, shared: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        start = self.task_names.index(task) * self.width
        return self.heads[task](shared[:, start : start + self.width])

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.layers.parameters()
        yield from self.alphas.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        return self.heads[task].parameters()

    def num_parameters(self) -> int:
        """The number of trainable scalars (the README's parameter counts)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
