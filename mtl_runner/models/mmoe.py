"""Multi-gate Mixture-of-Experts (MMoE).

Paper: J. Ma, Z. Zhao, X. Yi, J. Chen, L. Hong, E. H. Chi, "Modeling Task Relationships in
Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018,
https://dl.acm.org/doi/10.1145/3219819.3220007.
Model: E expert MLPs f_e on the input x; task k's gate g_k(x) = softmax(W_k x) ∈ Δ^E and its
tower h_k: y_k = h_k(Σ_e g_k,e(x) · f_e(x)).
Shared: the experts (``encode``); z = the E expert outputs side by side, [B, E·d] with d the last
width of ``expert_sizes``. Task k's parameters are its gate and its tower (``decode_task``),
and its gate reads the batch's ``features``, so task k's output depends on z, x and its own
parameters only, as the contract asks.
Grad sources: params — the Jacobian w.r.t. the experts' parameters; features — ∂L_k/∂z, the
gradient of task k's loss w.r.t. every expert's output on the batch. Every task reads every
expert (a softmax weight is never 0), so the rows overlap on all of z: meaningful.
Sizes: ``num_experts`` (8); ``expert_sizes`` ([32]) the hidden widths of an expert MLP, each
layer followed by the activation (and dropout), the last being the expert's output width d;
``tower_sizes`` ([16]) a tower's hidden widths before its linear output layer (empty: a linear
head on the mixture).
Differences: the paper's experts are single-layer ReLU networks (the default [32] is one
layer); its gates are softmax(W_gk x) without a bias, as here and in DeepCTR. LibMTL's MMoE
gates with a biased linear layer on the flattened input, uses its encoder as every expert,
and with ``rep_grad`` takes gradients w.r.t. each task's own gated mixture (one tensor per
task), not w.r.t. the expert outputs. With one expert the gate is 1 and MMoE is a
shared-bottom MLP (hard parameter sharing with towers).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from mtl_runner.models._experts import (
    ExpertBank,
    Gate,
    MixtureOfExperts,
    mix,
    require_features,
)
from mtl_runner.models._layers import check_count, check_dropout, check_sizes
from mtl_runner.tasks import Task


class MMoE(MixtureOfExperts):
    feature_gradients = True  # every task reads every expert's output

    def __init__(
        self,
        in_features: int,
        tasks: Sequence[Task],
        num_experts: int = 8,
        expert_sizes: Sequence[int] = (32,),
        tower_sizes: Sequence[int] = (16,),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        num_experts = check_count("num_experts", num_experts, 1, "give one or more experts")
        expert_sizes = check_sizes("expert_sizes", expert_sizes)
        tower_sizes = check_sizes("tower_sizes", tower_sizes, allow_empty=True)
        dropout = check_dropout(dropout)
        self.experts = ExpertBank(num_experts, in_features, expert_sizes, activation, dropout)
        self.gates = nn.ModuleDict({task.name: Gate(in_features, num_experts) for task in tasks})
        self._make_towers(tasks, expert_sizes[-1], tower_sizes, activation, dropout)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        return self.experts(features).flatten(1)

    def gate_weights(self, task: str, features: torch.Tensor) -> torch.Tensor:
        """Task ``task``'s softmax weights over the experts, [B, E]."""
        return self.gates[task](features)

    def decode_task(
        self, task: str, shared: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        features = require_features(features, "MMoE")
        experts = shared.unflatten(1, (self.experts.count, self.experts.width))
        return self.towers[task](mix(self.gate_weights(task, features), experts))

    def _shared_modules(self) -> Iterator[nn.Module]:
        yield self.experts

    def _task_modules(self, task: str) -> Iterator[nn.Module]:
        yield self.gates[task]
        yield self.towers[task]
