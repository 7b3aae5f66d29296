"""Taps of z (mtl_runner.weighting.taps) and the one-pass feature-level backward built on them."""

from __future__ import annotations

import copy

import pytest
import torch

from mtl_runner.models.hps import HardParameterSharing
from mtl_runner.schema import TaskType
from mtl_runner.tasks import Task
from mtl_runner.weighting import Aggregation, GradientWeighting, StepContext
from mtl_runner.weighting.taps import TaskTaps

NAMES = ["a", "b", "c"]


def small_model() -> tuple[HardParameterSharing, torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    tasks = [Task(n, TaskType.multiclass, 3) for n in NAMES]
    model = HardParameterSharing(5, tasks, hidden_sizes=[7, 4])
    features = torch.randn(9, 5)
    targets = {n: torch.randint(3, (9,)) for n in NAMES}
    return model, features, targets


def task_losses(model, features, targets):
    z = model.encode(features)
    outputs = model.decode(z)
    tasks = [Task(n, TaskType.multiclass, 3) for n in NAMES]
    return torch.stack([t.loss(outputs[t.name], targets[t.name]) for t in tasks]), z


def tapped_losses(model, features, targets):
    z = model.encode(features)
    taps = TaskTaps(z, NAMES)
    outputs = {n: model.decode_task(n, t) for n, t in taps.items()}
    tasks = [Task(n, TaskType.multiclass, 3) for n in NAMES]
    losses = torch.stack([t.loss(outputs[t.name], targets[t.name]) for t in tasks])
    return losses, z, taps


def per_task_feature_gradients(model, features, targets) -> torch.Tensor:
    losses, z = task_losses(model, features, targets)
    return torch.stack([torch.autograd.grad(losses[k], z, retain_graph=True)[0] for k in range(3)])


def test_taps_without_a_route_are_the_ordinary_backward() -> None:
    model, features, targets = small_model()
    losses, _ = task_losses(model, features, targets)
    expected = torch.autograd.grad(losses.sum(), list(model.parameters()))
    losses, _, _ = tapped_losses(model, features, targets)
    got = torch.autograd.grad(losses.sum(), list(model.parameters()))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-7)


def test_the_route_receives_each_tasks_feature_gradient_once_and_feeds_the_trunk() -> None:
    model, features, targets = small_model()
    rows = per_task_feature_gradients(model, features, targets)
    losses, z, taps = tapped_losses(model, features, targets)
    received: list[tuple[torch.Tensor, ...]] = []

    def route(grads: tuple[torch.Tensor, ...]) -> torch.Tensor:
        received.append(grads)
        return 2.0 * grads[1]  # the trunk sees only task b, doubled

    taps.route_gradients(route)
    trunk = list(model.shared_parameters())
    got = torch.autograd.grad(losses.sum(), trunk)
    assert len(received) == 1
    torch.testing.assert_close(torch.stack(received[0]), rows)
    _, z = task_losses(model, features, targets)
    expected = torch.autograd.grad(z, trunk, grad_outputs=2.0 * rows[1])
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_gradients_with_respect_to_the_taps_stop_there() -> None:
    model, features, targets = small_model()
    losses, _, taps = tapped_losses(model, features, targets)
    taps.route_gradients(lambda grads: pytest.fail("the route must not run"))
    grads = torch.autograd.grad(losses.sum(), list(taps.values()))
    torch.testing.assert_close(torch.stack(grads), per_task_feature_gradients(*small_model()))


def test_an_unused_tap_sends_zeros() -> None:
    model, features, _ = small_model()
    taps = TaskTaps(model.encode(features), NAMES)
    received = []
    taps.route_gradients(lambda grads: received.append(grads) or sum(grads))
    (taps["a"].sum() + 3 * taps["c"].sum()).backward()
    assert [float(g.abs().sum()) for g in received[0]][1] == 0.0
    assert list(taps) == NAMES and len(taps) == 3


def test_unrouted_taps_are_plain_views_that_stop_autograd_grad() -> None:
    """The parameter level's taps: no autograd node of ours, the same per-task gradients, the
    ordinary backward through them, and no route."""
    model, features, targets = small_model()
    z = model.encode(features)
    taps = TaskTaps(z, NAMES, routed=False)
    assert list(taps) == NAMES
    assert all(
        type(t.grad_fn).__name__ == "ViewBackward0" and torch.equal(t, z) for t in taps.values()
    )
    tasks = [Task(n, TaskType.multiclass, 3) for n in NAMES]
    losses = torch.stack(
        [t.loss(model.decode_task(t.name, taps[t.name]), targets[t.name]) for t in tasks]
    )
    grads = torch.autograd.grad(losses.sum(), list(taps.values()), retain_graph=True)
    torch.testing.assert_close(torch.stack(grads), per_task_feature_gradients(*small_model()))
    twin, _, _ = small_model()  # the same seed: the same parameters and batch
    expected = torch.autograd.grad(
        task_losses(twin, features, targets)[0].sum(), list(twin.parameters())
    )
    got = torch.autograd.grad(losses.sum(), list(model.parameters()))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-7)
    with pytest.raises(RuntimeError, match="routed=False: they cannot route"):
        taps.route_gradients(sum)


@pytest.mark.parametrize(
    ("source", "node"), [("features", "_JoinBackward"), ("params", "ViewBackward0")]
)
def test_a_gradient_method_routes_its_taps_only_at_the_feature_level(
    source: str, node: str
) -> None:
    taps = Doubled(NAMES, grad_source=source).representation_taps(
        torch.randn(4, 2, requires_grad=True)
    )
    assert {type(t.grad_fn).__name__ for t in taps.values()} == {node}


class Doubled(GradientWeighting):
    """c = (1, 2, 3) on the features path: the step must be exactly the weighted backward."""

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        return Aggregation(weights=torch.tensor([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("loss_scale", [1.0, 1024.0])
def test_features_step_is_one_weighted_backward_and_keeps_earlier_gradients(
    loss_scale: float,
) -> None:
    """Heads get c_k ∇L_k, the trunk Σ c_k ∇L_k, both times the loss scale, and gradients
    already in ``.grad`` stay (added to, not scaled)."""
    model, features, targets = small_model()
    weights = torch.tensor([1.0, 2.0, 3.0])
    losses, _ = task_losses(model, features, targets)
    expected = torch.autograd.grad((weights * losses).sum() * loss_scale, list(model.parameters()))
    earlier = [torch.full_like(p, 0.5) for p in model.parameters()]
    for p, g in zip(model.parameters(), earlier):
        p.grad = g.clone()

    method = Doubled(NAMES, grad_source="features")
    losses, z, taps = tapped_losses(model, features, targets)
    context = StepContext(
        backward=lambda total: (total * loss_scale).backward(),
        shared_parameters=tuple(model.shared_parameters()),
        task_parameters={n: tuple(model.task_parameters(n)) for n in NAMES},
        shared_representation=z,
        draw_batch=lambda: None,
        loss_scale=loss_scale,
        task_representations=taps,
    )
    torch.testing.assert_close(method.step(losses, context), weights)
    for p, e, g in zip(model.parameters(), expected, earlier):
        torch.testing.assert_close(p.grad, e + g, rtol=1e-5, atol=1e-5 * loss_scale)


def test_features_step_equals_the_batched_path_without_taps() -> None:
    """The one-pass path (taps) and the vmapped path (no taps) give the same gradients."""
    model, features, targets = small_model()
    twin = copy.deepcopy(model)
    method = Doubled(NAMES, grad_source="features")

    def run(m, tapped: bool):
        if tapped:
            losses, z, taps = tapped_losses(m, features, targets)
        else:
            (losses, z), taps = task_losses(m, features, targets), None
        method.step(
            losses,
            StepContext(
                backward=lambda total: total.backward(),
                shared_parameters=tuple(m.shared_parameters()),
                task_parameters={n: tuple(m.task_parameters(n)) for n in NAMES},
                shared_representation=z,
                draw_batch=lambda: None,
                task_representations=taps,
            ),
        )
        return [p.grad for p in m.parameters()]

    for a, b in zip(run(model, True), run(twin, False)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scale_by_task_multiplies_each_gradient_by_its_tasks_weight_exactly(
    dtype: torch.dtype,
) -> None:
    """The fused CPU route (0-dim weight tensors) gives bitwise c_k·g, as one mul_ per tensor
    with the Python number c_k does; None is skipped."""
    from mtl_runner.weighting.gradients import scale_by_task

    generator = torch.Generator().manual_seed(3)
    grads = [torch.randn(5, 4, generator=generator, dtype=dtype) for _ in range(4)]
    expected = [g.clone() for g in grads]
    owners = [0, 2, 1, 2]
    weights = torch.tensor([0.3, 1.7, 1 / 3], dtype=dtype)
    scale_by_task([*grads, None], [*owners, 0], weights)
    for grad, before, k in zip(grads, expected, owners):
        assert torch.equal(grad, before.mul_(weights[k].item()))


def test_scale_by_task_converts_weights_of_another_dtype() -> None:
    """float64 weights on float32 gradients (a float64 solve): c_k rounded to the gradient's
    dtype, as a Python-number multiply does."""
    from mtl_runner.weighting.gradients import scale_by_task

    grads = [torch.full((3,), 3.0), torch.full((2,), 5.0)]
    scale_by_task(grads, [1, 0], torch.tensor([0.1, 1 / 3], dtype=torch.float64))
    assert torch.equal(grads[0], torch.full((3,), 3.0) * (1 / 3))
    assert torch.equal(grads[1], torch.full((2,), 5.0) * 0.1)
