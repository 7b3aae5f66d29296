"""Customized Gate Control (CGC), the single-level form of PLE.

Paper: H. Tang, J. Liu, M. Zhao, X. Gong, "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020,
https://dl.acm.org/doi/10.1145/3383313.3412236.
Model: S shared expert MLPs and T task-specific expert MLPs per task, all on the input x; task
k's gate g_k(x) = softmax(W_k x) mixes the S shared experts and task k's own T experts, and
task k's tower reads the mixture: y_k = h_k(Σ_e g_k,e(x) · [shared experts, task-k experts]_e).
Shared: every expert (``encode``): the shared experts and also the task-specific ones, which are
parameters of ``encode``; their Jacobian columns are nonzero only in their own task's row, so
the parameter-level Jacobian stays exact. z = [shared experts' outputs | task 1's experts' |
... | task K's], each block [B, n·d] flattened, d the last width of ``expert_sizes``. Task k's
parameters are its gate (which reads the batch's ``features``) and its tower.
Grad sources: params — the Jacobian w.r.t. all the experts' parameters; features — ∂L_k/∂z:
task k's row is nonzero on the shared experts' block and on its own experts' block only; the
rows overlap on the shared block (every task reads every shared expert), so it is
meaningful; the task-specific blocks take part in the aggregation as each task's own
coordinates (e.g. MGDA's min-norm point weighs them with the rest).
Sizes: ``shared_experts`` (2, at least 1: with none the tasks share nothing);
``task_experts`` (1 per task; 0 makes CGC an MMoE with ``shared_experts`` experts);
``expert_sizes`` ([32]) and ``tower_sizes`` ([16]) as in MMoE.
Differences: the paper's experts and towers are unspecified MLPs and its gates softmax(W x) on
the input without a bias, as here (DeepCTR's PLE with one level, which also allows gate
MLPs). CGC is ``model=ple`` with ``levels=1``: the same modules and outputs (checked in
tests/test_models_moe.py).
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


class CGC(MixtureOfExperts):
    feature_gradients = True  # every task reads the shared experts' block of z

    def __init__(
        self,
        in_features: int,
        tasks: Sequence[Task],
        shared_experts: int = 2,
        task_experts: int = 1,
        expert_sizes: Sequence[int] = (32,),
        tower_sizes: Sequence[int] = (16,),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        shared_experts = check_count(
            "shared_experts", shared_experts, 1, "give one or more (with none nothing is shared)"
        )
        task_experts = check_count("task_experts", task_experts, 0, "give 0 or more per task")
        expert_sizes = check_sizes("expert_sizes", expert_sizes)
        tower_sizes = check_sizes("tower_sizes", tower_sizes, allow_empty=True)
        dropout = check_dropout(dropout)
        names = [task.name for task in tasks]
        self.level = ExtractionLevel(
            names,
            shared_experts,
            task_experts,
            in_features,
            expert_sizes,
            activation,
            dropout,
            shared_gate=False,
        )
        width = expert_sizes[-1]
        self.layout = Layout()
        self.layout.add("shared", shared_experts, width)
        for name in names:
            self.layout.add(f"task:{name}", task_experts, width)
        self._make_towers(tasks, width, tower_sizes, activation, dropout)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        shared, own = self.level.experts(features, dict.fromkeys(self.task_names, features))
        return self.layout.pack({"shared": shared, **{f"task:{k}": v for k, v in own.items()}})

    def gate_weights(self, task: str, features: torch.Tensor) -> torch.Tensor:
        """Task ``task``'s softmax weights over [shared experts, its own experts], [B, S+T]."""
        return self.level.gates[task](features)

    def decode_task(
        self, task: str, shared: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        features = require_features(features, "CGC")
        mixture = self.level.task_output(
            task,
            features,
            self.layout.block(shared, "shared"),
            self.layout.block(shared, f"task:{task}"),
        )
        return self.towers[task](mixture)

    def _shared_modules(self) -> Iterator[nn.Module]:
        yield self.level.shared_experts
        yield self.level.task_experts

    def _task_modules(self, task: str) -> Iterator[nn.Module]:
        yield self.level.gates[task]
        yield self.towers[task]
