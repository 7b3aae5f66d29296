"""DSelect-k mixture of experts (dselect_k).

Paper: Hussein Hazimeh, Zhe Zhao, Aakanksha Chowdhery, Maheswaran Sathiamoorthy, Yihua Chen,
Rahul Mazumder, Lichan Hong, Ed H. Chi, "DSelect-k: Differentiable Selection in the Mixture of
Experts with Applications to Multi-Task Learning", NeurIPS 2021, https://arxiv.org/abs/2106.03760

``num_experts`` (E) expert MLPs read the input. Task k's DSelect-k gate gives weights over the
experts that are non-negative, sum to 1 (E a power of 2; else see the penalty below) and have
at most ``top_k`` non-zeros once the code logits leave [-γ/2, γ/2]; the mixture goes through
task k's tower (``tower_sizes``, then a linear output layer).

The gate: ``top_k`` single-expert selectors, each with m = ceil(log2 E) binary codes
s_j = S(z_j) from logits z_j, where S is the smooth-step of width γ (``gamma``),

    S(t) = 0 for t ≤ -γ/2,  1 for t ≥ γ/2,  -2t³/γ³ + 3t/(2γ) + 1/2 otherwise;

selector i's weight on expert e is r_e = Π_j (s_j if bit j of e is 1 else 1 - s_j), and the
expert weights are Σ_i softmax(w)_i r^(i). With ``gate: static`` (the paper's MTL setting, the
default) z and w are parameters of the task; with ``gate: per_example`` they are linear
functions of the batch's input features (the paper's per-example routing).

:meth:`DSelectK.regularization` returns ``entropy_weight`` · Σ_tasks Σ_i H(r^(i)) with
H(r) = -Σ_e r_e log(r_e + 1e-6), computed from the gate parameters (per_example: from the
inputs of the last training forward, averaged over its rows). When E is not a power of 2 it
adds, as the official code does, Σ_i 1/Σ_e r^(i)_e (weight 1), which keeps a selector from
putting its weight on one of the 2^m - E codes that name no expert.

Shared: the experts (``encode``); z = the E expert outputs flattened, [B, E·d]. Each task's
gate and tower are its own parameters.

Grad sources: ``params`` and ``features``. With ``features``, row k is ∂L_k/∂(expert outputs):
non-zero on the experts task k's gate weights, so two tasks' rows overlap on the experts both
use (all of them at initialisation, where every gate is near-uniform; only the shared picks
once the gates are sparse).

Differences from the paper / official code (TensorFlow/Keras, google-research/dselect_k_moe):
PyTorch; the initialisers are the official ones (z uniform in ±γ/100, w uniform in ±0.05, for
the per-example linear maps both weights and biases); the entropy weight is a constant (the
official regulariser takes a schedule, default 1e-6, and is off unless given); per_example
averages the penalties over the batch rows where the official code sums them, so the weight
does not scale with the batch size; the reachability term's denominator is kept ≥ 1e-6.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from mtl_runner.errors import ConfigError
from mtl_runner.models._layers import check_dropout, check_sizes, mlp
from mtl_runner.models.base import MultiTaskModel
from mtl_runner.schema import DSelectKGateType
from mtl_runner.tasks import Task

EPSILON = 1e-6  # inside the entropy's log (as the official code), and the reachability floor


def _features(features: torch.Tensor | None) -> torch.Tensor:
    if features is None:
        raise TypeError("DSelectK.decode needs the batch's features: gate=per_example reads them")
    return features


def smooth_step(inputs: torch.Tensor, gamma: float) -> torch.Tensor:
    """The cubic smooth-step: exactly 0 below -γ/2, 1 above γ/2, C¹ in between."""
    cubic = -2.0 / gamma**3 * inputs**3 + 3.0 / (2.0 * gamma) * inputs + 0.5
    return torch.where(
        inputs <= -gamma / 2,
        torch.zeros_like(inputs),
        torch.where(inputs >= gamma / 2, torch.ones_like(inputs), cubic),
    )


def selector_entropy(selectors: torch.Tensor) -> torch.Tensor:
    """H(r) = -Σ_e r_e log(r_e + ε) of each selector's distribution (the last axis)."""
    return -(selectors * torch.log(selectors + EPSILON)).sum(-1)


class DSelectKGate(nn.Module):
    """One task's gate: weights over ``num_experts`` experts, [E] (static) or [B, E]."""

    def __init__(
        self, num_experts: int, top_k: int, gamma: float, in_features: int | None = None
    ) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.gamma = gamma
        self.num_binary = math.ceil(math.log2(num_experts))
        self.power_of_2 = num_experts == 2**self.num_binary
        bits = torch.arange(self.num_binary - 1, -1, -1)
        codes = (torch.arange(num_experts).unsqueeze(1) >> bits) & 1  # row e: e in binary
        self.register_buffer("codes", codes.bool(), persistent=False)
        self.per_example = in_features is not None
        z_bound = gamma / 100
        if in_features is None:
            self.z_logits = nn.Parameter(torch.empty(top_k, self.num_binary))
            self.w_logits = nn.Parameter(torch.empty(top_k))
            nn.init.uniform_(self.z_logits, -z_bound, z_bound)
            nn.init.uniform_(self.w_logits, -0.05, 0.05)
        else:
            self.z_linear = nn.Linear(in_features, top_k * self.num_binary)
            self.w_linear = nn.Linear(in_features, top_k)
            for parameter in self.z_linear.parameters():
                nn.init.uniform_(parameter, -z_bound, z_bound)
            for parameter in self.w_linear.parameters():
                nn.init.uniform_(parameter, -0.05, 0.05)

    def selectors(self, features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax(w) ([k] or [B, k]) and the selectors' distributions ([k, E] or [B, k, E])."""
        if self.per_example:
            features = _features(features)
            z_logits = self.z_linear(features).unflatten(-1, (self.top_k, self.num_binary))
            w_logits = self.w_linear(features)
        else:
            z_logits, w_logits = self.z_logits, self.w_logits
        codes = smooth_step(z_logits, self.gamma).unsqueeze(-2)  # [..., k, 1, m]
        selectors = torch.where(self.codes, codes, 1 - codes).prod(-1)  # [..., k, E]
        return torch.softmax(w_logits, dim=-1), selectors

    def forward(self, features: torch.Tensor | None = None) -> torch.Tensor:
        weights, selectors = self.selectors(features)
        return (weights.unsqueeze(-1) * selectors).sum(-2)

    def penalty(self, entropy_weight: float, features: torch.Tensor | None = None) -> torch.Tensor:
        """entropy_weight · Σ_i H(r^(i)) (+ Σ_i 1/Σ_e r^(i)_e when E is not a power of 2);
        per example: the mean over the rows."""
        _, selectors = self.selectors(features)
        total = entropy_weight * selector_entropy(selectors).sum(-1)
        if not self.power_of_2:
            total = total + (1 / selectors.sum(-1).clamp_min(EPSILON)).sum(-1)
        return total.mean()


class DSelectK(MultiTaskModel):
    def __init__(
        self,
        in_features: int,
        tasks: Sequence[Task],
        num_experts: int = 8,
        top_k: int = 2,
        expert_sizes: Sequence[int] = (32,),
        tower_sizes: Sequence[int] = (16,),
        gamma: float = 1.0,
        entropy_weight: float = 1e-6,
        gate: str = "static",
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        num_experts, top_k = int(num_experts), int(top_k)
        if num_experts < 2:
            raise ConfigError(
                f"model.num_experts={num_experts} is not allowed: use 2 or more experts"
            )
        if not 1 <= top_k <= num_experts:
            raise ConfigError(
                f"model.top_k={top_k} is not allowed: select 1 to "
                f"model.num_experts={num_experts} experts"
            )
        if not gamma > 0:
            raise ConfigError(
                f"model.gamma={gamma} is not allowed: the smooth-step's width must be positive"
            )
        if not entropy_weight >= 0:
            raise ConfigError(
                f"model.entropy_weight={entropy_weight} is not allowed: it must be >= 0"
            )
        expert_sizes = check_sizes("expert_sizes", expert_sizes)
        tower_sizes = check_sizes("tower_sizes", tower_sizes, allow_empty=True)
        dropout = check_dropout(dropout)
        self.task_names = tuple(task.name for task in tasks)
        self.gate_type = DSelectKGateType(gate)
        self.entropy_weight = float(entropy_weight)
        self.num_experts = num_experts
        self.expert_width = expert_sizes[-1]
        self.experts = nn.ModuleList(
            mlp(in_features, expert_sizes, activation, dropout) for _ in range(num_experts)
        )
        routing = in_features if self.gate_type is DSelectKGateType.per_example else None
        self.gates = nn.ModuleDict(
            {
                name: DSelectKGate(num_experts, top_k, float(gamma), routing)
                for name in self.task_names
            }
        )
        last = tower_sizes[-1] if tower_sizes else self.expert_width
        self.towers = nn.ModuleDict(
            {
                task.name: nn.Sequential(
                    *mlp(self.expert_width, tower_sizes, activation, dropout),
                    nn.Linear(last, task.output_size),
                )
                for task in tasks
            }
        )
        self._routing: torch.Tensor | None = None  # per_example: the last training inputs

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([expert(features) for expert in self.experts], dim=1).flatten(1)

    def decode(
        self, shared: torch.Tensor, features: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return {name: self.decode_task(name, shared, features) for name in self.task_names}

    def decode_task(
        self, task: str, shared: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        experts = shared.unflatten(1, (self.num_experts, self.expert_width))  # [B, E, d]
        gate = self.gates[task]
        if gate.per_example:
            features = _features(features)
            if self.training:
                self._routing = features.detach()
            weights = gate(features)  # [B, E]
            mixed = torch.einsum("be,bed->bd", weights.to(experts.dtype), experts)
        else:
            mixed = torch.einsum("e,bed->bd", gate().to(experts.dtype), experts)
        return self.towers[task](mixed)

    def regularization(self) -> torch.Tensor | None:
        first = next(iter(self.gates.values()))
        if self.entropy_weight == 0 and first.power_of_2:
            return None
        if first.per_example and self._routing is None:
            return None  # no training forward yet
        routing = self._routing if first.per_example else None
        return torch.stack(
            [gate.penalty(self.entropy_weight, routing) for gate in self.gates.values()]
        ).sum()

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.experts.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        yield from self.gates[task].parameters()
        yield from self.towers[task].parameters()

    def num_parameters(self) -> int:
        """The number of trainable scalars (the README's parameter counts)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
