"""The interface between the trainer and every weighting method (DESIGN.md §3).

The trainer knows no method by name. Per optimizer step it computes the batch's K unweighted
task losses and calls :meth:`Weighting.backward`, which must leave the gradients in the
parameters' ``.grad`` and return the method's weight vector c ∈ ℝ^K — one meaning for every
method: for loss-based methods c_k = ∂L_total/∂L_k, for gradient-based methods the shared
parameters move along Σ_k c_k ∇L_k. At the end of each epoch the trainer calls
:meth:`Weighting.on_epoch_end` with the epoch means of the unweighted training losses (the
values written to ``train/loss/<task>``).

Loss-based methods subclass :class:`LossWeighting` and implement :meth:`LossWeighting.weights`
(or :meth:`Weighting.combine` when the total loss is not Σ c_k L_k with detached c). A
gradient-based method overrides :meth:`Weighting.backward` and uses the :class:`StepContext`
(shared parameters, shared representation) to take per-task gradients; the trainer is not
touched.

Hyperparameters are the keyword arguments of ``__init__`` after ``task_names``; their type hints
are the schema that ``conf/weighting/<name>.yaml`` is validated against (see
:func:`mtl_runner.weighting.build_weighting`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Combined:
    """A scalar to backpropagate and the weights c (detached, shape [K]) it applies."""

    loss: torch.Tensor
    weights: torch.Tensor


@dataclass(frozen=True)
class StepContext:
    """What a method may use during one optimizer step besides the losses.

    ``backward(tensor)`` backpropagates a scalar through the mixed-precision loss scaler (use it
    instead of ``tensor.backward()``); ``shared_parameters`` are the parameters shared by all
    tasks; ``shared_representation`` is the trunk output z of this batch, part of the graph.
    """

    backward: Callable[[torch.Tensor], None]
    shared_parameters: Sequence[torch.nn.Parameter]
    shared_representation: torch.Tensor


class Weighting(ABC):
    """Base of every weighting method; see the module docstring for the contract."""

    def __init__(self, task_names: Sequence[str]) -> None:
        self.task_names = tuple(task_names)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @abstractmethod
    def combine(self, losses: torch.Tensor) -> Combined:
        """Turn the K differentiable losses of a batch into a scalar and its weights."""

    def backward(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        """Fill the parameters' gradients for this step and return the weights c ([K])."""
        combined = self.combine(losses)
        context.backward(combined.loss)
        return combined.weights

    def on_epoch_end(self, train_losses: torch.Tensor) -> None:
        """Receive the epoch means L̄_k of the unweighted training losses ([K], float64, CPU)."""

    def parameters(self) -> list[torch.nn.Parameter]:
        """Learnable parameters of the method; the trainer optimises them with the model's."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """State needed to resume bit-for-bit (saved with each checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)}")


class LossWeighting(Weighting):
    """A method whose total loss is Σ_k c_k L_k with c computed from the detached losses."""

    @abstractmethod
    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """The weights c ([K]) for the batch's detached losses ([K])."""

    def combine(self, losses: torch.Tensor) -> Combined:
        weights = self.weights(losses.detach())
        return Combined(loss=(weights * losses).sum(), weights=weights)
