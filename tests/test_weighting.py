"""The weighting methods of this issue against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from mtl_runner.errors import ConfigError
from mtl_runner.weighting import LossWeighting
from mtl_runner.weighting.dwa import DWA
from mtl_runner.weighting.equal import Equal
from mtl_runner.weighting.fixed import Fixed
from mtl_runner.weighting.inverse_loss import InverseLoss

TASKS = ("a", "b", "c")


def test_equal_weights_are_one_and_total_is_the_sum() -> None:
    losses = torch.tensor([2.0, 4.0, 0.5], requires_grad=True)
    combined = Equal(TASKS).combine(losses)
    assert combined.weights.tolist() == [1.0, 1.0, 1.0]
    assert combined.loss.item() == pytest.approx(6.5)
    combined.loss.backward()
    assert losses.grad.tolist() == [1.0, 1.0, 1.0]  # c_k = dL_total / dL_k


def test_fixed_weights_are_the_config_and_the_coefficients() -> None:
    losses = torch.tensor([2.0, 4.0, 0.5], requires_grad=True)
    combined = Fixed(TASKS, weights=[1.0, 0.5, 0.0]).combine(losses)
    assert combined.weights.tolist() == [1.0, 0.5, 0.0]
    assert combined.loss.item() == pytest.approx(4.0)
    combined.loss.backward()
    assert losses.grad.tolist() == [1.0, 0.5, 0.0]


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0, 2.0], r"has 2 entries but the dataset has 3 tasks \(a, b, c\)"),
        ([1.0, -1.0, 1.0], "must be non-negative"),
        ([0.0, 0.0, 0.0], "at least one must be positive"),
    ],
)
def test_fixed_rejects_bad_weights(weights: list[float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Fixed(TASKS, weights=weights)


def test_inverse_loss_hand_values() -> None:
    # 1/L = [0.5, 0.25, 2], sum 2.75  ->  [2/11, 1/11, 8/11]
    losses = torch.tensor([2.0, 4.0, 0.5], requires_grad=True)
    combined = InverseLoss(TASKS).combine(losses)
    assert combined.weights.tolist() == pytest.approx([2 / 11, 1 / 11, 8 / 11], abs=1e-7)
    assert combined.weights.sum().item() == pytest.approx(1.0)
    # each task contributes the same c_k * L_k, and the weights are treated as constants
    assert (combined.weights * losses.detach()).tolist() == pytest.approx([4 / 11] * 3, abs=1e-7)
    combined.loss.backward()
    assert losses.grad.tolist() == pytest.approx([2 / 11, 1 / 11, 8 / 11], abs=1e-7)


def test_inverse_loss_survives_a_zero_loss() -> None:
    weights = InverseLoss(("a", "b")).weights(torch.tensor([0.0, 1.0]))
    assert torch.isfinite(weights).all()
    assert weights.tolist() == pytest.approx([1.0, 1e-12], abs=1e-9)


def test_inverse_loss_rejects_non_positive_eps() -> None:
    with pytest.raises(ConfigError, match="weighting.eps=0.0 is not allowed"):
        InverseLoss(TASKS, eps=0.0)


def _dwa_after(epoch_losses: list[list[float]], temperature: float = 2.0) -> DWA:
    method = DWA(TASKS, temperature=temperature)
    for losses in epoch_losses:
        method.on_epoch_end(torch.tensor(losses, dtype=torch.float64))
    return method


def test_dwa_is_one_for_the_first_two_epochs() -> None:
    batch = torch.tensor([3.0, 1.0, 2.0])
    assert _dwa_after([]).weights(batch).tolist() == [1.0, 1.0, 1.0]  # epoch 1
    assert _dwa_after([[1.0, 2.0, 0.5]]).weights(batch).tolist() == [1.0, 1.0, 1.0]  # epoch 2


@pytest.mark.parametrize(
    ("temperature", "expected"),
    [
        # r = L(e-1)/L(e-2) = [0.8, 0.5, 1.0];  c = 3 exp(r/T) / sum_j exp(r_j/T)
        (2.0, [1.0115045511678045, 0.8706100353803773, 1.1178854134518184]),
        (1.0, [1.0127536133961494, 0.7502663298651157, 1.236980056738735]),
    ],
)
def test_dwa_hand_values(temperature: float, expected: list[float]) -> None:
    method = _dwa_after([[1.0, 2.0, 0.5], [0.8, 1.0, 0.5]], temperature)
    weights = method.weights(torch.tensor([9.0, 9.0, 9.0]))  # batch losses do not matter
    assert weights.tolist() == pytest.approx(expected, abs=1e-6)
    assert weights.sum().item() == pytest.approx(3.0, abs=1e-6)  # the factor K


def test_dwa_uses_the_last_two_epochs_only() -> None:
    method = _dwa_after([[5.0, 5.0, 5.0], [1.0, 2.0, 0.5], [0.8, 1.0, 0.5]])
    assert method.weights(torch.ones(3)).tolist() == pytest.approx(
        [1.0115045511678045, 0.8706100353803773, 1.1178854134518184], abs=1e-6
    )


def test_dwa_state_round_trip() -> None:
    trained = _dwa_after([[1.0, 2.0, 0.5], [0.8, 1.0, 0.5]])
    restored = DWA(TASKS)
    restored.load_state_dict(trained.state_dict())
    assert torch.equal(restored.weights(torch.ones(3)), trained.weights(torch.ones(3)))
    restored.on_epoch_end(torch.tensor([0.4, 1.0, 0.5], dtype=torch.float64))
    # r = [0.4/0.8, 1/1, 0.5/0.5]: the restored history is the one that was saved
    assert restored.weights(torch.ones(3)).tolist() == pytest.approx(
        [0.8407951960600039, 1.079602401969998, 1.079602401969998], abs=1e-6
    )


def test_dwa_rejects_non_positive_temperature() -> None:
    with pytest.raises(ConfigError, match=r"weighting.temperature=0.0 is not allowed"):
        DWA(TASKS, temperature=0.0)


@pytest.mark.parametrize("method", [Equal(TASKS), Fixed(TASKS, [1, 2, 3]), InverseLoss(TASKS)])
def test_stateless_methods_have_empty_state(method: LossWeighting) -> None:
    assert method.state_dict() == {}
    method.load_state_dict({})
    with pytest.raises(ValueError, match="has no state"):
        method.load_state_dict({"unexpected": 1})
