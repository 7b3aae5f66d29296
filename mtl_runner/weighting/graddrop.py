"""Gradient Sign Dropout (GradDrop).

Paper: Z. Chen, J. Ngiam, Y. Huang, T. Luong, H. Kretzschmar, Y. Chai, D. Anguelov, "Just Pick a
Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020,
https://arxiv.org/abs/2010.06808 (§3, Algorithm 1).
Direction: at the shared representation z, with ∇_k = ∂L_k/∂z, the sign purity
P = ½ (1 + Σ_k ∇_k / Σ_k |∇_k|) ∈ [0, 1] (P = ½ where every ∇_k is 0), U ~ 𝒰(0, 1) i.i.d. (torch's
global RNG, seeded and checkpointed by the trainer), masks M_k = [P > U]·[∇_k > 0] +
[P < U]·[∇_k < 0] (one sign survives at each element, the positive one with probability P), and
z receives d = Σ_k (ℓ + (1 − ℓ) M_k) ⊙ ∇_k with the leak ℓ. This is not a combination of the
gradients, so d is returned as the direction.
Weight: the fraction of task k's squared gradient norm that passes its mask,
c_k = Σ_e (ℓ + (1 − ℓ) M_ke) ∇_ke² / Σ_e ∇_ke² = ⟨m_k ⊙ ∇_k, ∇_k⟩ / ‖∇_k‖² with m_k = ℓ + (1−ℓ)M_k,
i.e. the least-squares coefficient of task k's surviving part on its own gradient; c_k ∈ [ℓ, 1],
c_k = 1 when no element of ∇_k is dropped (or ∇_k = 0, or an entry of ∇_k is not finite), and
d = Σ_k m_k ⊙ ∇_k. It also scales the heads (the project-wide convention: the head of task k
gets c_k ∇_head L_k); in the paper, LibMTL and torchjd the heads are unaffected by GradDrop
(c = 1).
Hyperparameters: ``leak`` ℓ ∈ [0, 1] (paper and LibMTL: 0; 1 turns GradDrop off);
``purity`` — ``element`` (default): P, U and the masks per element of the batch's ∂L_k/∂z
(the grad-source Jacobian, batch × width, as the formulas read and as torchjd does);
``batch``: LibMTL's form, which first reduces over the batch: S_k = Σ_b sign(z_b) ⊙ ∇_k,b per
unit, P = ½ (1 + Σ_k S_k / Σ_k |S_k|), one U per unit, M_k from the signs of S_k, and the mask of
a unit is shared by every sample of the batch (d = Σ_k m_k ⊙ ∇_k, m_k broadcast over the batch).
This is LibMTL's reading of how the paper treats batch-separated gradients at an activation
layer; ``element`` keeps one mask per (sample, unit) and needs no activations.
State: none.
Grad sources: ``features`` only — GradDrop is defined on the gradients at a layer's activations;
on the shared parameters sign purity has no meaning the paper gives, so grad_source=params is
refused at composition.
Other implementations: torchjd's GradDrop is ``purity=element`` (same draws: with the same seed
it gives the same direction; its ``leak`` is one value per task, its ``f`` the identity here) and
returns no weights. LibMTL is ``purity=batch`` (with 1e-7 added to Σ_k |S_k|) and logs none.
Not permutation invariant (random masks).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from enum import Enum

import torch

from mtl_runner.weighting._checks import require
from mtl_runner.weighting.base import StepContext
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource


class Purity(str, Enum):
    element = "element"
    batch = "batch"


class GradDrop(GradientWeighting):
    permutation_invariant = False  # random masks
    supported_sources = frozenset({GradSource.features})

    def __init__(
        self,
        task_names: Sequence[str],
        leak: float = 0.0,
        purity: Purity = Purity.element,
        grad_source: GradSource = GradSource.features,
    ) -> None:
        super().__init__(task_names, grad_source)
        require(0.0 <= leak <= 1.0, "leak", leak, "it must be in [0, 1]")
        self.leak = float(leak)
        self.purity = Purity(purity)
        self._activations: torch.Tensor | None = None

    def backward(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        self._activations = context.shared_representation.detach()
        try:
            return super().backward(losses, context)
        finally:
            self._activations = None

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        if self.purity is Purity.element:
            return self.drop(jacobian)
        if self._activations is None:
            raise RuntimeError(
                "GradDrop(purity=batch) needs the shared representation: call backward, or "
                "drop_batch(jacobian, activations)"
            )
        return self.drop_batch(jacobian, self._activations)

    def drop(self, jacobian: torch.Tensor) -> Aggregation:
        """The per-element form on J ([K, D]): P, U and the masks for each of the D columns."""
        absolute = jacobian.abs()  # |∇|, then (its buffer reused: fresh ones cost) |M ⊙ ∇|
        surviving = self._surviving_signs(jacobian, absolute)  # one sign per column
        # |M ⊙ ∇|: |∇| where sign(∇) = sign(P − U), else 0; M ⊙ ∇ is it times sign(P − U)
        # (±1, exactly), so the column sums of M ⊙ ∇ are the sign times the sums of |M ⊙ ∇|
        # (the same additions, negated), and their squares are the same: M ⊙ ∇ is never formed
        magnitudes = torch.mul(jacobian, surviving, out=absolute).clamp_min_(0.0)
        if self.leak == 0.0:
            return self._weighted(jacobian, magnitudes, magnitudes.sum(0).mul_(surviving))
        survivors = magnitudes * surviving
        keep = magnitudes.sign_()  # M (after M ⊙ ∇ was taken from it)
        return self._weighted(jacobian, survivors, self._leaky_direction(jacobian, keep))

    def drop_batch(self, jacobian: torch.Tensor, activations: torch.Tensor) -> Aggregation:
        """LibMTL's form: J ([K, B·R]) and z ([B, ...]); one mask per unit, shared by the batch."""
        num_tasks = jacobian.shape[0]
        batch = activations.shape[0]
        per_sample = jacobian.reshape(num_tasks, batch, -1)
        signs = torch.sign(activations.reshape(batch, -1)).to(jacobian.dtype)
        reduced = (per_sample * signs).sum(1)  # S_k, [K, R]
        return self._combine(per_sample, self._keep(reduced)[:, None, :])

    def _keep(self, signals: torch.Tensor) -> torch.Tensor:
        """M_k (1 or 0, in the signals' dtype) for the columns of ``signals`` ([K, N])."""
        # M = [∇ · sign(P − U) > 0], in float kernels: boolean ones cost several times more on
        # the CPU; a NaN ∇ or P gives 0 (torch.sign(NaN) = 0), as the comparisons did
        return (signals * self._surviving_signs(signals)).clamp_min_(0.0).sign_()

    @staticmethod
    def _surviving_signs(
        signals: torch.Tensor, absolute: torch.Tensor | None = None
    ) -> torch.Tensor:
        """sign(P − U) for the columns of ``signals`` ([K, N]): +1 where the positive sign
        survives (P > U), −1 where the negative does, 0 where P = U or P is NaN (``absolute``:
        |signals| if the caller has it)."""
        total = signals.sum(0)
        magnitude = (signals.abs() if absolute is None else absolute).sum(0)
        tiny = torch.finfo(signals.dtype).tiny
        # 2P = fl(1 + fl(Σ∇ / Σ|∇|)) in one kernel, written over Σ∇ (addcdiv rounds the
        # quotient, then the sum, and reads each element before writing it). Where Σ|∇| = 0
        # every ∇ is 0, so Σ∇ / tiny is exactly 0: no torch.where needed. The ratio lies in
        # [−1, 1] without a clamp: both sums add in the same order, and rounding is monotone,
        # so every partial |Σ∇| ≤ Σ|∇|
        doubled = torch.addcdiv(
            _one(signals.dtype, signals.device), total, magnitude.clamp_min_(tiny), out=total
        )
        # U in Σ|∇|'s buffer, no longer read: the draws of torch.rand(N) (the same uniform_ of
        # the global generator), without allocating
        draw = magnitude.uniform_()
        # P − U = ½ (fl(1 + ratio) − 2U) with P = ½ fl(1 + ratio) as the definition rounds it:
        # 2U and the halving are exact, and a float difference is 0 only between equal
        # floats, so this sign is that of P − U, in one kernel fewer
        return doubled.sub_(draw, alpha=2.0).sign_()

    def _combine(self, gradients: torch.Tensor, keep: torch.Tensor) -> Aggregation:
        """d and c from the gradients ∇ ([K, ...]) and M (broadcastable to them)."""
        survivors = keep * gradients  # M ⊙ ∇
        if self.leak == 0.0:  # ℓ + (1 − ℓ)·M = M exactly
            return self._weighted(gradients, survivors, survivors.sum(0))
        return self._weighted(gradients, survivors, self._leaky_direction(gradients, keep))

    def _leaky_direction(self, gradients: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """d = Σ_k (ℓ + (1 − ℓ)·M_k) ⊙ ∇_k."""
        return ((self.leak + (1.0 - self.leak) * keep) * gradients).sum(0)

    def _weighted(
        self, gradients: torch.Tensor, survivors: torch.Tensor, direction: torch.Tensor
    ) -> Aggregation:
        """c from ∇ ([K, ...]) and M ⊙ ∇ (or |M ⊙ ∇|: only its squares are read), with d."""
        total, kept = squared_norms(gradients, survivors)
        passed = kept if self.leak == 0.0 else self._passed(total, kept, gradients.dtype)
        # 1 where the fraction is undefined: ∇_k = 0, or an entry (in float64: its square) is
        # not finite (0 < t < inf fails)
        weights = [p / t if 0.0 < t < math.inf else 1.0 for p, t in zip(passed, total)]
        return Aggregation(
            weights=torch.tensor(weights, dtype=gradients.dtype, device=gradients.device),
            direction=direction.flatten(),
        )

    def _passed(self, total: list[float], kept: list[float], dtype: torch.dtype) -> list[float]:
        """Σ_e m_ke ∇_ke² from Σ ∇² and Σ (M ⊙ ∇)²: the mask is m_low where M = 0 and m_high
        where M = 1, the two values ℓ + (1 − ℓ)·M takes in the gradients' dtype."""
        low, high = (self.leak + (1.0 - self.leak) * torch.tensor([0.0, 1.0], dtype=dtype)).tolist()
        return [low * (t - k) + high * k for t, k in zip(total, kept)]


@functools.cache
def _one(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 0-dim 1 (read only, never written) for addcdiv's first operand."""
    return torch.ones((), dtype=dtype, device=device)


def squared_norms(first: torch.Tensor, second: torch.Tensor) -> tuple[list[float], list[float]]:
    """Σ_e x_ke² for each row k of ``first`` and of ``second`` (both [K, ...]).

    The sums are taken in the tensors' dtype: in float32 a fraction of two of them is within a
    few roundings of the exact fraction (at worst 2.4e-7 relative over 300 random Jacobians).
    Exact float64 squares cost three more kernels per tensor, about 1.6% of a GradDrop step, so
    both sums are taken again from them (exact for float32 and narrower dtypes) only where a sum
    of ``first`` leaves the range in which the squares keep their precision: below tiny/eps,
    where they turn subnormal; not finite; or above max/2, where a sum of ``second``, no larger
    in exact arithmetic, could round to inf.
    """
    first_sums = _row_squares(first)
    floor, ceiling = _precise_range(first.dtype)
    if not all(floor <= s <= ceiling for s in first_sums):
        return _row_squares(first.double()), _row_squares(second.double())
    return first_sums, _row_squares(second)


@functools.cache
def _precise_range(dtype: torch.dtype) -> tuple[float, float]:
    """[tiny/eps, max/2] of ``dtype`` (cached: finfo costs ~0.6% of a step). float64 has no
    wider dtype to fall back to: (−inf, inf), which only a NaN sum leaves (taken again, the
    same)."""
    if dtype == torch.float64:
        return -math.inf, math.inf
    info = torch.finfo(dtype)
    return info.tiny / info.eps, info.max / 2


def _row_squares(rows: torch.Tensor) -> list[float]:
    rows = rows.flatten(1)
    return (rows * rows).sum(1).tolist()  # x·x: the same values as pow, cheaper
