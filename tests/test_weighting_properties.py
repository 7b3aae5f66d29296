"""Properties every weighting method must have, applied to every config in conf/weighting/.

In the style of torchjd's aggregator tests: on seeded random losses and Jacobians — full rank,
rank-deficient, and scaled by 1e-8 and 1e8 — the weights are finite and of shape [K]; methods
that declare ``non_conflicting`` give a direction with ⟨d, g_k⟩ ≥ 0 for every task; methods that
declare ``permutation_invariant`` permute their weights with the tasks; state survives a
``state_dict`` round trip. Then every method trains the default config for 3 epochs on every
grad source it supports, and takes a step in which one task has no label. Adding a method adds
it here with no edit.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mtl_runner.config_dir import config_dir
from mtl_runner.models.hps import HardParameterSharing
from mtl_runner.schema import TaskType
from mtl_runner.tasks import MISSING_CLASS, Task
from mtl_runner.weighting import (
    GradientWeighting,
    LossWeighting,
    StepContext,
    Weighting,
    build_weighting,
)

WEIGHTING_DIR = Path(config_dir()) / "weighting"
METHODS = sorted(p.stem for p in WEIGHTING_DIR.glob("*.yaml"))
# values a method needs that have no default (`???` in its YAML), for K tasks
REQUIRED = {"fixed": lambda k: {"weights": [1.0 + i for i in range(k)]}}
SCALES = (1e-8, 1.0, 1e8)


def make_method(name: str, num_tasks: int = 3, **overrides) -> Weighting:
    cfg = OmegaConf.load(WEIGHTING_DIR / f"{name}.yaml")
    cfg = OmegaConf.merge(cfg, REQUIRED.get(name, lambda k: {})(num_tasks), overrides)
    return build_weighting(cfg, [f"t{i}" for i in range(num_tasks)])


def sources(name: str) -> list[str]:
    method = make_method(name)
    if isinstance(method, GradientWeighting):
        return sorted(s.value for s in method.supported_sources)
    return ["none"]


def jacobians(num_tasks: int, width: int = 20) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(num_tasks)
    full = torch.randn(num_tasks, width, generator=generator, dtype=torch.float64)
    rank_one = torch.randn(num_tasks, 1, generator=generator, dtype=torch.float64) @ torch.randn(
        1, width, generator=generator, dtype=torch.float64
    )
    aligned = full.abs()  # no conflict at all
    cases = {"full": full, "rank1": rank_one, "aligned": aligned}
    return {f"{k}x{s:g}": (v * s).float() for k, v in cases.items() for s in SCALES}


def random_losses(num_tasks: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(100 + num_tasks)
    return (torch.rand(num_tasks, generator=generator) + 0.1) * scale


def direction_of(method: GradientWeighting, jacobian: torch.Tensor, losses: torch.Tensor):
    aggregation = method.aggregate(jacobian, losses)
    weights = aggregation.weights
    direction = aggregation.direction
    if direction is None:
        direction = weights.to(jacobian.dtype) @ jacobian
    return weights, direction


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("name", METHODS)
def test_weights_are_finite_and_of_shape_k(name: str, num_tasks: int) -> None:
    for scale in SCALES:
        losses = random_losses(num_tasks, scale)
        method = make_method(name, num_tasks)
        if isinstance(method, GradientWeighting):
            for case, jacobian in jacobians(num_tasks).items():
                method = make_method(name, num_tasks)
                weights, direction = direction_of(method, jacobian, losses)
                assert weights.shape == (num_tasks,), case
                assert torch.isfinite(weights).all() and torch.isfinite(direction).all(), case
                assert direction.shape == (jacobian.shape[1],), case
        else:
            assert isinstance(method, LossWeighting)
            combined = method.combine(losses.clone().requires_grad_())
            assert combined.weights.shape == (num_tasks,)
            assert torch.isfinite(combined.weights).all(), scale
            assert combined.loss.shape == () and torch.isfinite(combined.loss)


GRADIENT_METHODS = [n for n in METHODS if isinstance(make_method(n), GradientWeighting)]


@pytest.mark.parametrize("bad", [float("inf"), float("nan")], ids=["inf", "nan"])
@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_an_overflowed_gradient_gives_finite_weights_quietly(name: str, bad: float) -> None:
    """A non-finite gradient entry (overflow) is left to the trainer's divergence check: the
    method neither raises nor warns, and its weights stay finite."""
    good = jacobians(3)["fullx1"]
    jacobian = good.clone()
    jacobian[1, 3] = bad
    method = make_method(name, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weights = method.aggregate(jacobian, random_losses(3)).weights
    assert weights.shape == (3,) and torch.isfinite(weights).all(), weights
    # the method's state is not poisoned: an fp16 scaler skips such a step and training goes on
    assert all_finite(method.state_dict()), method.state_dict()
    assert torch.isfinite(method.aggregate(good, random_losses(3)).weights).all()


def all_finite(state: object) -> bool:
    """Every float in a (nested) state is finite."""
    if isinstance(state, dict):
        return all(all_finite(v) for v in state.values())
    if isinstance(state, list | tuple):
        return all(all_finite(v) for v in state)
    if isinstance(state, torch.Tensor):
        return bool(torch.isfinite(state).all()) if state.is_floating_point() else True
    if isinstance(state, float):
        return math.isfinite(state)
    return True


NON_CONFLICTING = [n for n in METHODS if type(make_method(n)).non_conflicting]


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("name", NON_CONFLICTING)
def test_non_conflicting_direction(name: str, num_tasks: int) -> None:
    for case, jacobian in jacobians(num_tasks).items():
        method = make_method(name, num_tasks)
        _, direction = direction_of(method, jacobian, random_losses(num_tasks))
        products = (jacobian.double() @ direction.double()) / (
            jacobian.double().norm() * direction.double().norm() + 1e-300
        )
        assert (products >= -1e-4).all(), (case, products)


PERMUTATION_INVARIANT = [n for n in METHODS if type(make_method(n)).permutation_invariant]


@pytest.mark.parametrize("name", PERMUTATION_INVARIANT)
def test_permutation_invariance(name: str) -> None:
    num_tasks = 4
    permutation = torch.tensor([2, 0, 3, 1])
    losses = random_losses(num_tasks)
    if isinstance(make_method(name, num_tasks), GradientWeighting):
        jacobian = jacobians(num_tasks)["fullx1"]
        weights = make_method(name, num_tasks).aggregate(jacobian, losses).weights
        permuted = (
            make_method(name, num_tasks)
            .aggregate(jacobian[permutation], losses[permutation])
            .weights
        )
    else:
        weights = make_method(name, num_tasks).combine(losses).weights
        permuted = make_method(name, num_tasks).combine(losses[permutation]).weights
    torch.testing.assert_close(permuted, weights[permutation], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", METHODS)
def test_state_round_trip(name: str) -> None:
    """A method restored from its state_dict continues exactly like the original."""
    num_tasks = 3
    original = make_method(name, num_tasks)
    jacobian = jacobians(num_tasks)["fullx1"]

    def step(method: Weighting, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # random methods draw the same numbers
        losses = random_losses(num_tasks) * (1 + seed)
        if isinstance(method, GradientWeighting):
            return method.aggregate(jacobian * (1 + 0.1 * seed), losses).weights
        return method.combine(losses).weights

    for seed in range(3):
        step(original, seed)
        original.on_epoch_end(random_losses(num_tasks).double() * (1 + seed))
    restored = make_method(name, num_tasks)
    restored.load_state_dict(copy.deepcopy(original.state_dict()))
    torch.testing.assert_close(step(restored, 7), step(original, 7))


TRAINING_CASES = [(name, source) for name in METHODS for source in sources(name)]


@pytest.mark.parametrize(
    ("name", "source"), TRAINING_CASES, ids=[f"{n}-{s}" for n, s in TRAINING_CASES]
)
def test_trains_three_epochs(mtl_run, name: str, source: str) -> None:
    overrides = [f"weighting={name}"]
    overrides += [f"weighting.{k}={v}" for k, v in REQUIRED.get(name, lambda k: {})(3).items()]
    if source != "none":
        overrides.append(f"weighting.grad_source={source}")
    outcome = mtl_run(*overrides)
    assert outcome.code == 0, outcome.stderr
    metrics = outcome.metrics
    assert len(metrics) == 3 and metrics.notna().all().all()
    assert outcome.results["status"] == "completed"
    # the method's state travels with the checkpoint and loads with weights_only=True
    checkpoint = torch.load(outcome.run_dir / "checkpoints" / "last.pt", weights_only=True)
    restored = make_method(name, 3, **({} if source == "none" else {"grad_source": source}))
    restored.load_state_dict(checkpoint["weighting"])


def small_problem(absent: str | None = None):
    """A model, a batch (task ``absent`` without labels) and the trainer's forward for it."""
    torch.manual_seed(0)
    tasks = [Task(f"t{k}", TaskType.multiclass, 3) for k in range(3)]
    model = HardParameterSharing(6, tasks, hidden_sizes=[8])
    features = torch.randn(16, 6)
    targets = {t.name: torch.randint(3, (16,)) for t in tasks}
    if absent is not None:
        targets[absent][:] = MISSING_CLASS

    def forward(method: Weighting | None):
        """Losses, z and the taps the method asks for (None: a drawn batch, no taps)."""
        z = model.encode(features)
        copies = None if method is None else method.representation_taps(z)
        outputs = (
            {n: model.decode_task(n, c) for n, c in copies.items()}
            if copies is not None
            else model.decode(z)
        )
        return torch.stack([t.loss(outputs[t.name], targets[t.name]) for t in tasks]), z, copies

    def context(method: Weighting, z, copies, present=None) -> StepContext:
        return StepContext(
            backward=lambda total: total.backward(),
            shared_parameters=tuple(model.shared_parameters()),
            task_parameters={t.name: tuple(model.task_parameters(t.name)) for t in tasks},
            shared_representation=z,
            draw_batch=lambda: forward(None)[:2],
            task_representations=copies,
            present=present,
        )

    return model, forward, context


def absent_task_step(method: Weighting) -> tuple[torch.Tensor, HardParameterSharing]:
    """One step on a batch in which task t1 has no label, as the trainer makes it."""
    model, forward, context = small_problem(absent="t1")
    losses, z, copies = forward(method)
    present = torch.tensor([True, False, True])
    return method.step(losses, context(method, z, copies, present)), model


ABSENT_CASES = [(name, source) for name in METHODS for source in sources(name)]


@pytest.mark.parametrize(
    ("name", "source"), ABSENT_CASES, ids=[f"{n}-{s}" for n, s in ABSENT_CASES]
)
def test_a_task_absent_from_the_batch(name: str, source: str) -> None:
    options = {} if source == "none" else {"grad_source": source}
    method = make_method(name, 3, **options)
    weights, model = absent_task_step(method)
    assert weights.shape == (3,)
    assert torch.isnan(weights[1]) and torch.isfinite(weights[[0, 2]]).all()
    head = [p.grad for p in model.task_parameters("t1")]
    assert all(g is None or torch.count_nonzero(g) == 0 for g in head)  # no label, no gradient
    shared = [p.grad for p in model.shared_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in shared)


@pytest.mark.parametrize("source", ["params", "features"])
def test_mgda_with_an_absent_task_balances_the_present_ones(source: str) -> None:
    # a zero row for the absent task would put the min-norm point at 0: no step at all
    weights, model = absent_task_step(make_method("mgda", 3, grad_source=source))
    assert weights[[0, 2]].sum().item() == pytest.approx(1.0)
    assert any(torch.count_nonzero(p.grad) > 0 for p in model.shared_parameters())


@pytest.mark.parametrize(
    ("name", "source"), ABSENT_CASES, ids=[f"{n}-{s}" for n, s in ABSENT_CASES]
)
def test_returned_weights_are_not_changed_by_later_steps(name: str, source: str) -> None:
    """The trainer keeps each step's weights and averages them at the end of the epoch: what a
    step returned must not be a view of state that the optimizer or the method changes later
    (GradNorm's λ once was its parameter itself)."""
    method = make_method(name, 3, **({} if source == "none" else {"grad_source": source}))
    model, forward, context = small_problem()
    optimizer = torch.optim.SGD([*model.parameters(), *method.parameters()], lr=0.5)
    returned = []
    for _ in range(3):
        optimizer.zero_grad(set_to_none=True)
        losses, z, copies = forward(method)
        weights = method.step(losses, context(method, z, copies))
        returned.append((weights, weights.clone()))
        optimizer.step()
        method.after_step(lambda: forward(None)[0].detach())
    for step, (weights, snapshot) in enumerate(returned):
        torch.testing.assert_close(weights, snapshot, rtol=0, atol=0, msg=f"step {step + 1}")
