"""Per-task gradients and the base class of every gradient-based method.

A gradient-based method sees the Jacobian J ∈ ℝ^{K×D} of the task losses with respect to its
``grad_source``:

- ``params``: the shared parameters, flattened and concatenated (D = number of shared
  parameters). The trainer applies each head to its own tap of z (:mod:`.taps`), so one
  ordinary backward to the taps gives every ∂L_k/∂z and the heads' own gradients; one vmapped
  vector-Jacobian product through the trunk then turns the K rows into parameter gradients.
- ``features``: the shared representation z of the batch, flattened (D = batch × width), i.e.
  ∂L_k/∂z for the whole batch matrix as in MGDA-UB (Sener & Koltun 2018). One ordinary
  backward does it all: where the taps join, the K gradients are the Jacobian, the method
  solves for c there, and the trunk continues with d_z = cᵀJ in the same pass, so the step
  costs one backward plus the solve; LibMTL instead sums ∂L_k/∂z over the batch rows.

The method's :meth:`GradientWeighting.aggregate` returns the weights c and, for methods whose
direction is not a combination of the current gradients, the direction d itself. The shared
parameters (or z) then receive d = cᵀJ (or the returned d), and — one convention for every
method — the head of task k receives c_k ∇_head L_k.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import torch

from mtl_runner.errors import ConfigError
from mtl_runner.weighting.base import StepContext, Weighting, fill_absent
from mtl_runner.weighting.taps import TaskTaps


class GradSource(str, Enum):
    params = "params"
    features = "features"


@dataclass(frozen=True)
class Aggregation:
    """The result of a gradient-based method for one step.

    ``weights`` ([K]) is what is logged and what scales the heads; ``direction`` ([D]) is the
    update of the grad source when it is not ``weightsᵀJ`` (None means ``weightsᵀJ``).
    """

    weights: torch.Tensor
    direction: torch.Tensor | None = None


class GradientWeighting(Weighting):
    """Base of the methods that read per-task gradients (subclasses implement ``aggregate``)."""

    #: the grad sources the method supports; composing another fails with a clear message
    supported_sources: ClassVar[frozenset[GradSource]] = frozenset(GradSource)
    splits_representation = True  # the backward below sends the trunk its gradient itself
    #: ``aggregate`` works on the rows of any subset of the tasks (False when it reads K-sized
    #: settings, such as a preference vector): used for batches where a task has no label
    aggregates_task_subsets: ClassVar[bool] = True

    def __init__(self, task_names: Sequence[str], grad_source: GradSource = GradSource.params):
        super().__init__(task_names)
        self.grad_source = GradSource(grad_source)
        if self.grad_source not in self.supported_sources:
            allowed = ", ".join(sorted(s.value for s in self.supported_sources))
            raise ConfigError(
                f"weighting.grad_source={self.grad_source.value} is not supported by "
                f"{type(self).__name__}: use {allowed}"
            )

    def representation_taps(self, shared: torch.Tensor) -> TaskTaps | None:
        """Routed taps for the one-pass feature-level backward; the parameter level only reads
        ∂L_k/∂z at its taps (autograd.grad stops there), so plain views serve it."""
        if not self.splits_representation:
            return None
        routed = self.grad_source is GradSource.features
        return TaskTaps(shared, self.task_names, routed=routed)

    @abstractmethod
    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        """Weights (and optionally a direction) from J ([K, D]) and the detached losses ([K])."""

    def backward_with_absent_tasks(
        self, losses: torch.Tensor, context: StepContext, present: torch.Tensor
    ) -> torch.Tensor:
        """A stateless method aggregates the rows of the present tasks only: an absent task's
        row is zero, and a zero row would, e.g., put MGDA's min-norm point at 0 (no step).
        A method with per-task state or K-sized settings keeps the base behaviour (all K rows,
        the absent ones zero) so that they stay K-shaped."""
        stateful = type(self).state_dict is not Weighting.state_dict
        if stateful or not self.aggregates_task_subsets:
            return super().backward_with_absent_tasks(losses, context, present)
        self._present_rows = present.nonzero().squeeze(1)
        try:
            weights = self.backward(fill_absent(losses, present), context)
        finally:
            self._present_rows = None
        return torch.where(present, weights, torch.nan)

    def _aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        rows = getattr(self, "_present_rows", None)
        if rows is None:
            return self.aggregate(jacobian, losses)
        part = self.aggregate(jacobian[rows], losses[rows])
        weights = jacobian.new_zeros(len(losses)).index_copy(0, rows, part.weights.to(jacobian))
        return Aggregation(weights=weights, direction=part.direction)

    def backward(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        if self.grad_source is GradSource.features:
            return self._backward_features(losses, context)
        return self._backward_params(losses, context)

    def _backward_params(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        shared = list(context.shared_parameters)
        heads = [list(context.task_parameters[name]) for name in self.task_names]
        scale = context.loss_scale
        shared_rows, head_grads = self._parameter_rows(
            scaled(losses, scale), context, shared, heads
        )
        shared_jacobian = scaled(
            torch.cat([row.flatten(1) for row in shared_rows], dim=1), 1 / scale
        )
        aggregation = self._aggregate(shared_jacobian, losses.detach())
        weights = aggregation.weights.detach().to(shared_jacobian.dtype)
        direction = aggregation.direction
        if direction is None:  # a fresh vector: its pieces can become the gradients themselves
            assign_flat_gradient(shared, scaled(weights @ shared_jacobian, scale), copy=False)
        else:  # the method's own tensor (it may keep it): copied
            assign_flat_gradient(shared, scaled(direction, scale))
        weight_heads(heads, head_grads, weights)
        return weights

    def _parameter_rows(
        self,
        losses: torch.Tensor,
        context: StepContext,
        shared: list[torch.nn.Parameter],
        heads: list[list[torch.nn.Parameter]],
    ) -> tuple[tuple[torch.Tensor, ...], list[tuple[torch.Tensor | None, ...]]]:
        """Rows of the shared-parameter Jacobian and each head's ∇L_k.

        With the per-task taps of z (the trainer passes them): one backward to the taps gives
        every ∂L_k/∂z, then one vmapped vector-Jacobian product through the trunk alone turns
        them into parameter rows — relying on the model's contract that the shared parameters
        act only through ``encode``. Without them: one vmapped backward over the whole graph.
        """
        if context.task_representations is None:
            rows = jacobian_rows(losses, shared + [p for head in heads for p in head])
            head_rows = iter(rows[len(shared) :])
            head_grads = [tuple(next(head_rows)[k] for _ in head) for k, head in enumerate(heads)]
            return rows[: len(shared)], head_grads
        taps = [context.task_representations[name] for name in self.task_names]
        feature_jacobian, head_grads = split_rows(losses, taps, heads)
        grads = torch.autograd.grad(
            context.shared_representation,
            shared,
            grad_outputs=feature_jacobian,
            is_grads_batched=True,
            allow_unused=True,
        )
        rows = tuple(
            torch.zeros(len(taps), *p.shape, device=p.device, dtype=p.dtype) if g is None else g
            for g, p in zip(grads, shared)
        )
        return rows, head_grads

    def _backward_features(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        taps = context.task_representations
        if taps is None:  # one graph: K backwards via vmap
            return self._backward_features_batched(losses, context)
        shared = context.shared_representation
        scale = context.loss_scale
        detached = losses.detach()
        applied: list[torch.Tensor] = []

        def route(grads: tuple[torch.Tensor, ...]) -> torch.Tensor:
            """Inside the backward: J from the K ∂L_k/∂z, the method's c, and d_z = cᵀJ."""
            jacobian = scaled(at_least_float32(torch.stack(grads).view(len(grads), -1)), 1 / scale)
            aggregation = self._aggregate(jacobian, detached)
            weights = in_dtype(aggregation.weights, jacobian.dtype)
            if weights.requires_grad:  # (grad mode is off here; a method's own leaf may leak)
                weights = weights.detach()
            applied.append(weights)
            direction = aggregation.direction
            if direction is None:
                direction = weights @ jacobian
            return in_dtype(scaled(direction, scale).view(shared.shape), shared.dtype)

        # the heads' .grad must hold this backward's ∇_head L_k alone before they are weighted
        params, owners, held = fresh_head_gradients(context.task_parameters, self.task_names)
        taps.route_gradients(route)
        try:  # one backward: heads, the route at z, then the trunk with d_z (see taps.py)
            context.backward(losses.sum())
            (weights,) = applied
            scale_by_task([p.grad for p in params], owners, weights)
        finally:
            taps.route_gradients(None)
            put_back(held)
        return weights

    def _backward_features_batched(
        self, losses: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        shared = context.shared_representation
        scale = context.loss_scale
        (rows,) = jacobian_rows(losses * scale, [shared], retain_graph=True)
        jacobian = at_least_float32(rows.flatten(1)) / scale
        aggregation = self._aggregate(jacobian, losses.detach())
        weights = aggregation.weights.detach().to(jacobian.dtype)
        if aggregation.direction is None:  # c_k on every part: one ordinary backward
            context.backward((weights.to(losses.dtype) * losses).sum())
            return weights
        heads = [p for name in self.task_names for p in context.task_parameters[name]]
        head_total = (weights.to(losses.dtype) * losses).sum() * scale
        torch.autograd.backward(head_total, inputs=heads, retain_graph=True)
        shared.backward(aggregation.direction.reshape(shared.shape).to(shared.dtype) * scale)
        return weights


def fresh_head_gradients(
    task_parameters: Mapping[str, Sequence[torch.nn.Parameter]], task_names: Sequence[str]
) -> tuple[list[torch.nn.Parameter], list[int], list[tuple[torch.nn.Parameter, torch.Tensor]]]:
    """The heads' parameters in one flat list, the task (index) each belongs to, and the
    gradients their ``.grad`` held, taken out so that a backward fills them afresh (put them
    back with :func:`put_back`). One pass: this runs every step."""
    params, owners, held = [], [], []
    for k, name in enumerate(task_names):
        for parameter in task_parameters[name]:
            params.append(parameter)
            owners.append(k)
            if parameter.grad is not None:
                held.append((parameter, parameter.grad))
                parameter.grad = None
    return params, owners, held


def weight_heads(
    heads: Sequence[Sequence[torch.nn.Parameter]],
    head_grads: Sequence[Sequence[torch.Tensor | None]],
    weights: torch.Tensor,
) -> None:
    """The head of task k gets c_k ∇_head L_k, from fresh gradients (already loss-scaled) that
    autograd returned: they are scaled in place and become (or are added to) ``.grad``."""
    params = [p for head in heads for p in head]
    grads = [g for task_grads in head_grads for g in task_grads]
    scale_by_task(grads, [k for k, head in enumerate(heads) for _ in head], weights)
    for parameter, grad in zip(params, grads):
        if grad is not None:
            accumulate_gradient(parameter, grad, copy=False)


def scale_by_task(
    grads: Sequence[torch.Tensor | None], owners: Sequence[int], weights: torch.Tensor
) -> None:
    """g ← c_k·g, in place, for each gradient g of task k = its owner (tensors nobody else
    holds, each in its parameter's dtype and device; None is skipped); one fused call on the
    CPU."""
    present = [(g, k) for g, k in zip(grads, owners) if g is not None]
    if not present:
        return
    if weights.is_cpu and present[0][0].is_cpu and weights.dtype == present[0][0].dtype:
        # 0-dim tensors, not Python numbers: on the CPU, foreach with scalars wraps each one in
        # a tensor per call (about 3x the cost); c_k in g's dtype either way, so the same result
        factors = weights.unbind()
        torch._foreach_mul_([g for g, _ in present], [factors[k] for _, k in present])
        return
    if weights.is_cpu and present[0][0].is_cpu:
        values = weights.tolist()  # on the CPU: no device sync
        torch._foreach_mul_([g for g, _ in present], [values[k] for _, k in present])
        return
    for grad, k in present:
        grad.mul_(weights[k].to(grad.device, grad.dtype))


def put_back(held: Sequence[tuple[torch.nn.Parameter, torch.Tensor]]) -> None:
    """Add the gradients :func:`fresh_head_gradients` took out to what ``.grad`` holds now."""
    for parameter, grad in held:
        accumulate_gradient(parameter, grad, copy=False)


def split_rows(
    losses: torch.Tensor,
    taps: Sequence[torch.Tensor],
    heads: Sequence[Sequence[torch.nn.Parameter]],
) -> tuple[torch.Tensor, list[tuple[torch.Tensor | None, ...]]]:
    """∂L_k/∂z ([K, *z.shape]) and each head's ∇L_k, in one ordinary backward to the taps.

    Task k's head was applied to its own tap of z, so ∂(Σ_j L_j)/∂tap_k = ∂L_k/∂z and the
    heads' gradients come unmixed: no vmap and no backward per task. Autograd stops at the
    taps; the trunk is not traversed.
    """
    flat_heads = [p for head in heads for p in head]
    grads = torch.autograd.grad(losses.sum(), [*taps, *flat_heads], allow_unused=True)
    rows = torch.stack([torch.zeros_like(tap) if g is None else g for g, tap in zip(grads, taps)])
    rest = iter(grads[len(taps) :])
    return rows, [tuple(next(rest) for _ in head) for head in heads]


def jacobian_rows(
    losses: torch.Tensor, inputs: Sequence[torch.Tensor], retain_graph: bool = False
) -> tuple[torch.Tensor, ...]:
    """∂L_k/∂input for every k and input: one tensor [K, *input.shape] per input.

    One vmapped backward; falls back to K backwards where an op has no batching rule.
    """
    num_tasks = losses.shape[0]
    identity = torch.eye(num_tasks, device=losses.device, dtype=losses.dtype)
    try:
        grads = torch.autograd.grad(
            losses,
            list(inputs),
            grad_outputs=identity,
            is_grads_batched=True,
            retain_graph=retain_graph,
            allow_unused=True,
        )
    except RuntimeError:  # pragma: no cover - ops without a vmap rule
        per_task = [
            torch.autograd.grad(
                losses[k],
                list(inputs),
                retain_graph=retain_graph or k < num_tasks - 1,
                allow_unused=True,
            )
            for k in range(num_tasks)
        ]
        grads = tuple(
            torch.stack([_dense(g, x) for g in column]) for column, x in zip(zip(*per_task), inputs)
        )
    return tuple(
        torch.zeros(num_tasks, *x.shape, device=x.device, dtype=x.dtype) if g is None else g
        for g, x in zip(grads, inputs)
    )


def _dense(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


def assign_flat_gradient(
    parameters: Sequence[torch.nn.Parameter], flat: torch.Tensor, copy: bool = True
) -> None:
    """Write a flat vector into the parameters' ``.grad``, in order. ``copy=False``: ``flat``
    is a fresh vector nobody else holds, and its (disjoint) pieces become the gradients."""
    offset = 0
    for parameter in parameters:
        size = parameter.numel()
        piece = flat[offset : offset + size].view_as(parameter)
        accumulate_gradient(parameter, piece, copy=copy)
        offset += size


def accumulate_gradient(
    parameter: torch.nn.Parameter, grad: torch.Tensor, copy: bool = True
) -> None:
    """Add ``grad`` to ``parameter.grad`` (on its device and dtype); ``copy=False`` lets a fresh
    tensor that nobody else holds become the gradient itself."""
    if grad.requires_grad:
        grad = grad.detach()
    if grad.dtype != parameter.dtype or grad.device != parameter.device:
        grad = grad.to(parameter.device, parameter.dtype)  # (a copy: no clone needed below)
        copy = False
    if parameter.grad is None:
        parameter.grad = grad.clone() if copy else grad
    else:
        parameter.grad.add_(grad)


def in_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor.to(dtype)``, without the call when it already is (a hot path)."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision gradients (autocast) in float32 for the solve; float32/64 as they are."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def scaled(tensor: torch.Tensor, scale: float) -> torch.Tensor:
    """``tensor * scale``, skipping the kernel for the usual scale of 1 (no fp16 scaler)."""
    return tensor if scale == 1.0 else tensor * scale
