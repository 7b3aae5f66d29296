"""Shared pieces of the stochastic gradient methods (MoCo, DB-MTL, MoDo, SDMGrad).

- :func:`project_onto_simplex`: Euclidean projection onto {w ≥ 0, Σ w = 1}, in torch ops only
  (no host sync, any device); :func:`project_onto_simplex_array` the same in numpy.
- :func:`decayed`: the step sizes r / t^σ of MoCo and DB-MTL.
- :func:`finite_or`: keeps a method's state when a step's gradients are not finite (an fp16
  overflow: the loss scaler skips that step and lowers its scale, so the state must not absorb
  the inf/NaN); the direction written stays non-finite so that the scaler does notice.
- :func:`batch_jacobians` and :func:`write_gradients`: the several-batches-per-step backward of
  MoDo and SDMGrad. Jacobians are read divided by the loss scale; the shared gradient and the
  heads' gradients are written multiplied by it (``StepContext.loss_scale``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from mtl_runner.weighting.base import StepContext
from mtl_runner.weighting.gradients import (
    accumulate_gradient,
    assign_flat_gradient,
    jacobian_rows,
)

# entries of a vector to project are clamped here after the shift by its maximum: any vector
# this spread projects onto a vertex anyway, and the clamp keeps -inf out of the cumulative sums
_SPREAD = 1e30


def project_onto_simplex(vector: torch.Tensor) -> torch.Tensor:
    """argmin_{w ∈ Δ} ‖w − v‖ for a 1-D ``vector`` (sort-based, Held et al. 1974).

    The projection is invariant to adding a constant to every entry, so ``v − max v`` is
    projected: that keeps 1e16-sized inputs exact. NaN entries count as 0, ±inf as ±1e30.
    """
    v = torch.nan_to_num(vector, nan=0.0, posinf=_SPREAD, neginf=-_SPREAD)
    v = (v - v.max()).clamp_min(-_SPREAD)
    ordered = torch.sort(v, descending=True).values
    excess = torch.cumsum(ordered, dim=0) - 1.0  # Σ_{i≤j} u_i − 1
    count = torch.arange(1, v.numel() + 1, device=v.device, dtype=v.dtype)
    support = (ordered - excess / count > 0).sum()  # ≥ 1: true for j = 1
    threshold = excess.gather(0, (support - 1).reshape(1)) / support.to(v.dtype)
    return (v - threshold).clamp_min(0.0)


def project_onto_simplex_array(vector: np.ndarray) -> np.ndarray:
    """:func:`project_onto_simplex` for a float64 numpy vector: for inner loops on the host
    (SDMGrad's 20 inner steps). For the usual few tasks it runs on Python floats, which for K
    entries costs less than numpy's per-call overhead; the arithmetic is the same IEEE float64
    sequence either way (maximum, shift, descending sort, running sum)."""
    if not np.isfinite(vector).all():
        vector = np.nan_to_num(vector, nan=0.0, posinf=_SPREAD, neginf=-_SPREAD)
    if vector.size > FLOAT_ROUTE_SIZE:
        v = np.maximum(vector - vector.max(), -_SPREAD)
        ordered = np.sort(v)[::-1]
        excess = np.cumsum(ordered) - 1.0
        support = int(np.count_nonzero(ordered - excess / np.arange(1, v.size + 1) > 0))
        return np.maximum(v - excess[support - 1] / support, 0.0)
    return _project_floats(vector.tolist())


def project_floats_onto_simplex(values: list[float]) -> np.ndarray:
    """:func:`project_onto_simplex_array` of Python floats (at most FLOAT_ROUTE_SIZE of them):
    callers that already hold floats skip the array round trip."""
    if not all(map(math.isfinite, values)):
        return project_onto_simplex_array(np.array(values))
    return _project_floats(values)


def _project_floats(values: list[float]) -> np.ndarray:
    """The small-size route on finite Python floats."""
    top = max(values)
    floor = -_SPREAD
    # max(d, floor) as a conditional expression (the same value: max keeps d unless d < floor),
    # without a builtin call per entry; SDMGrad projects 20 times a step
    shifted = [floor if d < floor else d for d in [x - top for x in values]]
    running, support, excesses = 0.0, 0, []
    for count, entry in enumerate(sorted(shifted, reverse=True), start=1):
        running += entry
        excesses.append(running - 1.0)
        support += entry - excesses[-1] / count > 0
    threshold = excesses[support - 1] / support
    return np.array([0.0 if d < 0.0 else d for d in [x - threshold for x in shifted]])


#: vectors up to this size are projected with Python floats (SDMGrad's inner steps, too)
FLOAT_ROUTE_SIZE = 32


def decayed(rate: float, decay: float, step: int) -> float:
    """rate / step^decay (step is 1-based)."""
    return rate / step**decay


def finite_or(check: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` if every entry of ``check`` is finite, else ``old`` (no host sync)."""
    return torch.where(torch.isfinite(check).all(), new, old.to(new.device, new.dtype))


def batch_jacobians(
    losses: torch.Tensor,
    context: StepContext,
    task_names: Sequence[str],
    extra_batches: int,
    head_batch: int,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Jacobians ([K, D], w.r.t. the shared parameters) of this batch and up to ``extra_batches``
    fresh ones from ``context.draw_batch()``, which stops early when the epoch is spent.

    ``head_batch`` (a Python index into the batches actually drawn, negative counts from the end)
    names the batch whose head gradients are also returned: one tensor [K, *p.shape] per head
    parameter, in task order, still multiplied by the loss scale (ready to be written).
    """
    batches = [losses]
    for _ in range(extra_batches):
        drawn = context.draw_batch()
        if drawn is None:
            break
        batches.append(drawn[0])
    head_index = head_batch % len(batches)
    shared = list(context.shared_parameters)
    heads = [p for name in task_names for p in context.task_parameters[name]]
    scale = context.loss_scale
    jacobians: list[torch.Tensor] = []
    head_rows: list[torch.Tensor] = []
    for index, batch_losses in enumerate(batches):
        with_heads = index == head_index
        rows = jacobian_rows(batch_losses * scale, shared + heads if with_heads else shared)
        jacobians.append(torch.cat([row.flatten(1) for row in rows[: len(shared)]], dim=1) / scale)
        if with_heads:
            head_rows = list(rows[len(shared) :])
    return jacobians, head_rows


def write_gradients(
    context: StepContext,
    task_names: Sequence[str],
    weights: torch.Tensor,
    jacobian: torch.Tensor,
    head_rows: Sequence[torch.Tensor],
    finite: torch.Tensor,
) -> None:
    """Shared parameters get weightsᵀJ; the head of task k gets weights_k ∇_head L_k.

    ``finite`` (a 0-d bool tensor) false: the shared gradient is written as NaN, so that the
    fp16 loss scaler skips the step even when only another batch overflowed.
    """
    weights = weights.to(jacobian.dtype)
    direction = torch.where(finite, weights @ jacobian, torch.nan)
    assign_flat_gradient(list(context.shared_parameters), direction * context.loss_scale)
    rows = iter(head_rows)
    for k, name in enumerate(task_names):
        for parameter in context.task_parameters[name]:
            accumulate_gradient(parameter, weights[k] * next(rows)[k])
