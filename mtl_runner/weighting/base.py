"""The interface between the trainer and every weighting method (DESIGN.md §3).

The trainer knows no method by name. Per optimizer step it computes the batch's K unweighted
task losses and calls :meth:`Weighting.backward`, which must leave the gradients in the
parameters' ``.grad`` and return the method's weight vector c ∈ ℝ^K — one meaning for every
method: for loss-based methods c_k = ∂L_total/∂L_k, for gradient-based methods the shared
parameters move along Σ_k c_k ∇L_k. After the optimizer step it calls
:meth:`Weighting.after_step` (a method that needs the losses after the step on the same batch,
such as FAMO, calls the closure it is given). At the end of each epoch it calls
:meth:`Weighting.on_epoch_end` with the epoch means of the unweighted training losses (the values
written to ``train/loss/<task>``).

Loss-based methods subclass :class:`LossWeighting` and implement :meth:`LossWeighting.weights`
(or :meth:`LossWeighting.combine` when the total loss is not Σ c_k L_k with detached c).
Gradient-based methods subclass :class:`mtl_runner.weighting.gradients.GradientWeighting`.
Everything a method may need during a step is in the :class:`StepContext`.

Hyperparameters are the keyword arguments of ``__init__`` after ``task_names``; their type hints
are the schema that ``conf/weighting/<name>.yaml`` is validated against (see
:func:`mtl_runner.weighting.build_weighting`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mtl_runner.weighting.taps import TaskTaps


@dataclass(frozen=True)
class Combined:
    """A scalar to backpropagate and the weights c (detached, shape [K]) it applies."""

    loss: torch.Tensor
    weights: torch.Tensor


@dataclass(frozen=True)
class StepContext:
    """What a method may use during one optimizer step besides the losses.

    - ``backward(tensor)`` backpropagates a scalar through the mixed-precision loss scaler (use
      it instead of ``tensor.backward()``).
    - ``loss_scale``: the fp16 loss scale (1.0 otherwise). Gradients a method writes into
      ``.grad`` itself must be multiplied by it; gradients it reads must be divided by it.
    - ``shared_parameters``: the parameters shared by all tasks; ``task_parameters``: each
      task's own parameters (its head), by task name.
    - ``shared_representation``: the trunk output z of this batch, part of the graph.
    - ``draw_batch()``: the losses and shared representation of another, fresh batch of this
      epoch (for methods that need several batches per step), or None when the epoch is spent.
    - ``task_representations``: only for a method that declares ``splits_representation``:
      the taps of z that the heads were applied to (from :meth:`Weighting.representation_taps`;
      see :mod:`mtl_runner.weighting.taps`). A backward to the taps gives every ∂L_k/∂z; an
      ordinary backward of the losses reaches the trunk through the taps' route, which the
      method may set.
    - ``present``: None when every task has a label in this batch (the usual case); otherwise a
      boolean [K] mask of the tasks that have one. An absent task's loss is exactly 0 and
      carries no gradient (see :meth:`Weighting.step`).
    """

    backward: Callable[[torch.Tensor], None]
    shared_parameters: Sequence[torch.nn.Parameter]
    task_parameters: Mapping[str, Sequence[torch.nn.Parameter]]
    shared_representation: torch.Tensor
    draw_batch: Callable[[], tuple[torch.Tensor, torch.Tensor] | None]
    loss_scale: float = 1.0
    task_representations: TaskTaps | None = None
    present: torch.Tensor | None = None


class Weighting(ABC):
    """Base of every weighting method; see the module docstring for the contract.

    Class attributes declare the properties the shared test suite checks for every method.
    """

    #: the update direction never conflicts with a task gradient (⟨d, g_k⟩ ≥ 0 for all k)
    non_conflicting: ClassVar[bool] = False
    #: permuting the tasks permutes the weights (deterministic methods only)
    permutation_invariant: ClassVar[bool] = True
    #: the trainer decodes each task from its own tap of z (see StepContext); for methods that
    #: read the per-task gradients ∂L_k/∂z
    splits_representation: ClassVar[bool] = False

    def __init__(self, task_names: Sequence[str]) -> None:
        self.task_names = tuple(task_names)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def representation_taps(self, shared: torch.Tensor) -> TaskTaps | None:
        """What the heads read for this step's own batch: z itself (None), or a tap of z per
        task when the method ``splits_representation`` (passed back in the StepContext)."""
        return TaskTaps(shared, self.task_names) if self.splits_representation else None

    @abstractmethod
    def backward(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        """Fill the parameters' gradients for this step and return the weights c ([K])."""

    def step(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        """What the trainer calls: :meth:`backward`, after handling tasks absent from the batch.

        When some task has no label in the batch (``context.present``), its loss carries no
        gradient, so its weight has no meaning for this step: it is returned as NaN (the
        logged epoch mean averages the steps in which the task was present). The method still
        sees K losses: the absent ones are replaced by the mean of the present ones, a neutral
        value that keeps loss-normalising methods (inverse-loss, GLS, IMTL-L) finite and their
        state K-shaped. Methods that can do better override :meth:`backward_with_absent_tasks`.
        """
        if context.present is None:
            return self.backward(losses, context)
        return self.backward_with_absent_tasks(losses, context, context.present)

    def backward_with_absent_tasks(
        self, losses: torch.Tensor, context: StepContext, present: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`backward` for a batch where only the tasks in ``present`` have labels."""
        weights = self.backward(fill_absent(losses, present), context)
        return torch.where(present, weights, torch.nan)

    def after_step(self, losses_after_step: Callable[[], torch.Tensor]) -> None:
        """Called after each optimizer step; the closure gives the same batch's new losses."""

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


def fill_absent(losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The losses with each absent entry replaced by the (detached) mean of the present ones."""
    detached = losses.detach()
    mean = (detached * present).sum() / present.sum().clamp_min(1)
    return torch.where(present, losses, mean)


class LossWeighting(Weighting):
    """A method that combines the losses into one scalar, which is then backpropagated."""

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """The weights c ([K]) for the batch's detached losses ([K])."""
        raise NotImplementedError(f"{type(self).__name__} implements neither weights nor combine")

    def combine(self, losses: torch.Tensor) -> Combined:
        """Σ_k c_k L_k with c from :meth:`weights`; override when the total has another form."""
        weights = self.weights(losses.detach())
        return Combined(loss=(weights * losses).sum(), weights=weights)

    def backward(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        combined = self.combine(losses)
        context.backward(combined.loss)
        return combined.weights.detach()
