"""Progressive Layered Extraction (PLE).

Paper: H. Tang, J. Liu, M. Zhao, X. Gong, "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020,
https://dl.acm.org/doi/10.1145/3383313.3412236.
Model: ``levels`` extraction levels, each with S shared expert MLPs and T task-specific expert
MLPs per task. Level l has one input per task, h_k^{l-1}, and a shared input h_s^{l-1} (level
1: x for all). Its shared experts read h_s^{l-1}, task k's experts read h_k^{l-1}; task k's
gate softmax(W h_k^{l-1}) mixes the shared experts and task k's own into h_k^l, and a shared
gate softmax(W_s h_s^{l-1}) mixes all the level's experts (shared and every task's) into
h_s^l. The last level has no shared gate; task k's tower reads h_k^L.
Shared: everything up to the last level's expert outputs (``encode``): all the experts
(task-specific ones included: parameters of ``encode`` whose Jacobian columns are nonzero only
in their own task's row at the last level, exact either way) and the gates of the levels
below the last. z = [last level's shared experts' outputs | task 1's experts' | ... | task
K's | h_1^{L-1} | ... | h_K^{L-1}] (blocks [B, n·d] flattened, d the last width of
``expert_sizes``): the last blocks are what the last level's task gates read. With
``levels=1`` those gates read x, the batch's ``features``, and z has no such blocks (PLE with
one level is CGC, module for module). Task k's parameters are its last-level gate and tower.
Grad sources: params — the Jacobian w.r.t. every expert and lower gate; features — ∂L_k/∂z:
task k's row is nonzero on the shared experts' block and on its own blocks (its experts and
its gate input) only. The rows overlap on the shared block, which every task reads, so it is
meaningful, as for CGC.
Sizes: ``levels`` (2); ``shared_experts`` (2, at least 1), ``task_experts`` (1 per task, 0 or
more), ``expert_sizes`` ([32]) and ``tower_sizes`` ([16]) at every level, as in CGC. Experts
of the levels above the first read d-wide inputs.
Differences: the paper leaves expert and tower sizes open and its gates are softmax(W ·) of
the previous level's output without a bias, as here and in DeepCTR's PLE (whose gates may also
have hidden layers). Every level here has the same S, T and expert sizes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from mtl_runner.models._experts import (
    ExtractionLevel,
    Layout,
    MixtureOfExperts,
    require_features,
)
from mtl_runner.models._layers import check_count, check_dropout, check_sizes
from mtl_runner.tasks import Task


class PLE(MixtureOfExperts):
    feature_gradients = True  # every task reads the last level's shared experts' block of z

    def __init__(
        self,
        in_features: int,
        tasks: Sequence[Task],
        levels: int = 2,
        shared_experts: int = 2,
        task_experts: int = 1,
        expert_sizes: Sequence[int] = (32,),
        tower_sizes: Sequence[int] = (16,),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        levels = check_count("levels", levels, 1, "give one or more extraction levels")
        shared_experts = check_count(
            "shared_experts", shared_experts, 1, "give one or more (with none nothing is shared)"
        )
        task_experts = check_count("task_experts", task_experts, 0, "give 0 or more per task")
        expert_sizes = check_sizes("expert_sizes", expert_sizes)
        tower_sizes = check_sizes("tower_sizes", tower_sizes, allow_empty=True)
        dropout = check_dropout(dropout)
        names = [task.name for task in tasks]
        width = expert_sizes[-1]
        self.levels = nn.ModuleList(
            ExtractionLevel(
                names,
                shared_experts,
                task_experts,
                in_features if level == 0 else width,
                expert_sizes,
                activation,
                dropout,
                shared_gate=level < levels - 1,
            )
            for level in range(levels)
        )
        self.layout = Layout()
        self.layout.add("shared", shared_experts, width)
        for name in names:
            self.layout.add(f"task:{name}", task_experts, width)
        if levels > 1:  # the last level's task gates read the previous level's task outputs
            for name in names:
                self.layout.add(f"input:{name}", 1, width)
        self._make_towers(tasks, width, tower_sizes, activation, dropout)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        shared_input: torch.Tensor | None = features
        task_inputs = dict.fromkeys(self.task_names, features)
        for level in self.levels[:-1]:
            shared_input, task_inputs = level(shared_input, task_inputs)
        assert shared_input is not None  # every level but the last has a shared gate
        shared, own = self.levels[-1].experts(shared_input, task_inputs)
        blocks = {"shared": shared, **{f"task:{k}": v for k, v in own.items()}}
        if len(self.levels) > 1:
            blocks.update({f"input:{k}": v for k, v in task_inputs.items()})
        return self.layout.pack(blocks)

    def _gate_input(
        self, task: str, shared: torch.Tensor, features: torch.Tensor | None
    ) -> torch.Tensor:
        if len(self.levels) == 1:
            return require_features(features, type(self).__name__)
        return self.layout.block(shared, f"input:{task}").flatten(1)

    def gate_weights(
        self, task: str, shared: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Task ``task``'s last-level softmax weights over [shared experts, its own], [B, S+T]."""
        return self.levels[-1].gates[task](self._gate_input(task, shared, features))

    def decode_task(
        self, task: str, shared: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        mixture = self.levels[-1].task_output(
            task,
            self._gate_input(task, shared, features),
            self.layout.block(shared, "shared"),
            self.layout.block(shared, f"task:{task}"),
        )
        return self.towers[task](mixture)

    def _shared_modules(self) -> Iterator[nn.Module]:
        yield from self.levels[:-1]
        yield self.levels[-1].shared_experts
        yield self.levels[-1].task_experts

    def _task_modules(self, task: str) -> Iterator[nn.Module]:
        yield self.levels[-1].gates[task]
        yield self.towers[task]
