"""The trainer's contract with the weighting methods, checked step by step."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import torch

from mtl_runner.data.synthetic import make_synthetic
from mtl_runner.models.hps import HardParameterSharing
from mtl_runner.schema import Progress
from mtl_runner.training.trainer import (
    Trainer,
    TrainerSettings,
    restore_rng_state,
    rng_state,
    seed_everything,
)
from mtl_runner.weighting import Aggregation, GradientWeighting, StepContext, Weighting
from mtl_runner.weighting.base import Combined
from mtl_runner.weighting.inverse_loss import InverseLoss

TASKS = {
    "a": {"type": "multiclass", "num_classes": 5},
    "b": {"type": "multiclass", "num_classes": 3},
    "r": {"type": "regression"},
}


def small_data(n: int = 500):
    return make_synthetic(
        n=n,
        num_features=10,
        tasks=TASKS,
        signal=3.0,
        noise=1.0,
        relatedness=0.5,
        nonlinearity=0.5,
        seed=0,
        split={"train": 0.6, "val": 0.2, "test": 0.2},
    )


def make_trainer(weighting: Weighting, out_dir: Path, optimizer=torch.optim.Adam, lr=1e-3, **kw):
    seed_everything(0, deterministic=True)
    data = small_data()
    model = HardParameterSharing(data.num_features, data.tasks, hidden_sizes=[16, 8])
    settings = TrainerSettings(
        epochs=kw.pop("epochs", 2),
        batch_size=kw.pop("batch_size", 64),
        seed=0,
        progress=Progress.none,
        checkpoint=False,
        **kw,
    )
    return Trainer(model, weighting, data, optimizer, lr, settings, torch.device("cpu"), out_dir)


class RecordingInverseLoss(InverseLoss):
    def __init__(self, task_names) -> None:
        super().__init__(task_names)
        self.steps: list[tuple[list[float], list[float]]] = []

    def combine(self, losses: torch.Tensor) -> Combined:
        combined = super().combine(losses)
        self.steps.append((losses.detach().tolist(), combined.weights.tolist()))
        return combined


def test_logged_loss_is_batch_size_weighted_and_weight_is_the_step_mean(tmp_path: Path) -> None:
    method = RecordingInverseLoss(list(TASKS))
    trainer = make_trainer(method, tmp_path, epochs=1, batch_size=64)
    trainer.fit()
    # 300 training rows: four batches of 64 and one of 44
    sizes = [64, 64, 64, 64, 44]
    assert len(method.steps) == len(sizes)
    row = pd.read_csv(tmp_path / "metrics.csv").iloc[0]
    for k, task in enumerate(TASKS):
        expected_loss = sum(b * step[0][k] for b, step in zip(sizes, method.steps)) / 300
        expected_weight = sum(step[1][k] for step in method.steps) / len(sizes)
        assert row[f"train/loss/{task}"] == pytest.approx(expected_loss, rel=1e-6)
        assert row[f"weight/{task}"] == pytest.approx(expected_weight, rel=1e-6)
    assert list(row.index[-3:]) == ["val/mse/r", "val/mae/r", "val/r2/r"]


class InverseGradientNorm(Weighting):
    """A gradient-based method written against the bare interface: c_k = 1 / ||∇_θ L_k||."""

    def backward(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        norms = []
        for loss in losses:
            grads = torch.autograd.grad(loss, context.shared_parameters, retain_graph=True)
            norms.append(torch.sqrt(sum((g**2).sum() for g in grads)))
        weights = 1.0 / torch.stack(norms)
        context.backward((weights * losses).sum())
        return weights


def test_a_gradient_method_moves_the_trunk_along_the_weighted_gradients(tmp_path: Path) -> None:
    """One full-batch SGD step with lr=1: Δθ_shared = −Σ c_k ∇L_k, Δθ_head_k = −c_k ∇L_k."""
    trainer = make_trainer(
        InverseGradientNorm(list(TASKS)),
        tmp_path,
        torch.optim.SGD,
        lr=1.0,
        epochs=1,
        batch_size=None,
    )
    before = copy.deepcopy(trainer.model)
    train = trainer.data.train
    outputs = before(train.features)
    losses = [t.loss(outputs[t.name], train.targets[t.name]) for t in trainer.tasks]
    shared = list(before.shared_parameters())
    grads = [torch.autograd.grad(loss, shared, retain_graph=True) for loss in losses]
    weights = [1.0 / torch.sqrt(sum((g**2).sum() for g in gk)) for gk in grads]
    head_grads = [
        torch.autograd.grad(loss, list(before.task_parameters(t.name)), retain_graph=True)
        for loss, t in zip(losses, trainer.tasks)
    ]

    trainer.fit()

    for p_before, p_after, *task_grads in zip(shared, trainer.model.shared_parameters(), *grads):
        expected = p_before - sum(c * g for c, g in zip(weights, task_grads))
        torch.testing.assert_close(p_after, expected, rtol=1e-5, atol=1e-6)
    for task, c, g_head in zip(trainer.tasks, weights, head_grads):
        for p_before, p_after, g in zip(
            before.task_parameters(task.name), trainer.model.task_parameters(task.name), g_head
        ):
            torch.testing.assert_close(p_after, p_before - c * g, rtol=1e-5, atol=1e-6)
    logged = pd.read_csv(tmp_path / "metrics.csv").iloc[0]
    assert [logged[f"weight/{t}"] for t in TASKS] == pytest.approx(
        [w.item() for w in weights], rel=1e-6
    )


def test_rng_state_round_trip() -> None:
    seed_everything(5, deterministic=False)
    state = rng_state()
    import random

    import numpy as np

    first = (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random())
    restore_rng_state(state)
    again = (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random())
    assert first == again


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_run(mtl_run, precision: str) -> None:
    outcome = mtl_run("device=cuda", f"device.precision={precision}")
    assert outcome.code == 0, outcome.stderr
    assert outcome.results["device"] == "cuda:0"
    assert outcome.metrics.notna().all().all()


def test_auto_device_is_cpu_without_cuda(mtl_run) -> None:
    outcome = mtl_run("device=auto")
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert outcome.results["device"] == expected


class NormalisedGradients(GradientWeighting):
    """c_k = 1/||J_k|| through the GradientWeighting base, on either grad source."""

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        return Aggregation(weights=1.0 / jacobian.norm(dim=1))


class ExplicitSum(GradientWeighting):
    """Returns d = Σ_k J_k as an explicit direction, with weights 1: must equal Equal."""

    def aggregate(self, jacobian: torch.Tensor, losses: torch.Tensor) -> Aggregation:
        return Aggregation(weights=torch.ones(len(losses)), direction=jacobian.sum(dim=0))


def one_sgd_step(method: Weighting, tmp_path: Path) -> tuple[Trainer, HardParameterSharing]:
    tmp_path.mkdir(exist_ok=True)
    trainer = make_trainer(method, tmp_path, torch.optim.SGD, lr=1.0, epochs=1, batch_size=None)
    before = copy.deepcopy(trainer.model)
    trainer.fit()
    return trainer, before


def expected_step(model: HardParameterSharing, trainer: Trainer, source: str):
    """Hand computation of c and of the parameters after one SGD(lr=1) step."""
    train = trainer.data.train
    z = model.encode(train.features)
    outputs = model.decode(z)
    losses = [t.loss(outputs[t.name], train.targets[t.name]) for t in trainer.tasks]
    inputs = list(model.shared_parameters()) if source == "params" else [z]
    norms = [
        torch.sqrt(sum((g**2).sum() for g in torch.autograd.grad(loss, inputs, retain_graph=True)))
        for loss in losses
    ]
    weights = torch.stack([1.0 / n for n in norms]).detach()
    total = sum(c * loss for c, loss in zip(weights, losses))
    grads = torch.autograd.grad(total, list(model.parameters()))
    after = [p - g for p, g in zip(model.parameters(), grads)]
    return weights, after


@pytest.mark.parametrize("source", ["params", "features"])
def test_gradient_weighting_base_applies_its_weights(tmp_path: Path, source: str) -> None:
    trainer, before = one_sgd_step(NormalisedGradients(list(TASKS), grad_source=source), tmp_path)
    weights, after = expected_step(before, trainer, source)
    for p_after, p_expected in zip(trainer.model.parameters(), after):
        torch.testing.assert_close(p_after, p_expected, rtol=1e-5, atol=1e-6)
    logged = pd.read_csv(tmp_path / "metrics.csv").iloc[0]
    assert [logged[f"weight/{t}"] for t in TASKS] == pytest.approx(weights.tolist(), rel=1e-5)


@pytest.mark.parametrize("source", ["params", "features"])
def test_an_explicit_direction_reaches_the_shared_part(tmp_path: Path, source: str) -> None:
    from mtl_runner.weighting.equal import Equal

    explicit, _ = one_sgd_step(ExplicitSum(list(TASKS), grad_source=source), tmp_path / "x")
    equal, _ = one_sgd_step(Equal(list(TASKS)), tmp_path / "e")
    for p_explicit, p_equal in zip(explicit.model.parameters(), equal.model.parameters()):
        torch.testing.assert_close(p_explicit, p_equal, rtol=1e-5, atol=1e-6)


def test_unsupported_grad_source_is_refused() -> None:
    from mtl_runner.errors import ConfigError
    from mtl_runner.weighting import GradSource

    class ParamsOnly(NormalisedGradients):
        supported_sources = frozenset({GradSource.params})

    with pytest.raises(ConfigError, match="grad_source=features is not supported by ParamsOnly"):
        ParamsOnly(list(TASKS), grad_source="features")
