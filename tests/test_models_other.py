"""Cross-stitch networks and DSelect-k: shapes, the parameter split, hand-checked mixing, the
smooth-step, the gate's sparsity and entropy penalty, config errors, and runs via ``mtl-run``."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from test_errors import assert_one_line
from torch import nn

from mtl_runner.data.synthetic import make_synthetic
from mtl_runner.errors import ConfigError
from mtl_runner.models.cross_stitch import CrossStitch
from mtl_runner.models.dselect_k import DSelectK, DSelectKGate, smooth_step
from mtl_runner.schema import Progress, TaskType
from mtl_runner.tasks import Task
from mtl_runner.training.trainer import Trainer, TrainerSettings, seed_everything
from mtl_runner.weighting.equal import Equal
from mtl_runner.weighting.taps import TaskTaps

TASKS = [
    Task("a", TaskType.multiclass, 5),
    Task("b", TaskType.multiclass, 3),
    Task("c", TaskType.binary, 2),
]
SIZES = {"a": 5, "b": 3, "c": 2}


def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "cross_stitch": CrossStitch(10, TASKS),
        "cross_stitch_channel": CrossStitch(10, TASKS, stitch="channel", hidden_sizes=[8, 6]),
        "dselect_k": DSelectK(10, TASKS),
        "dselect_k_per_example": DSelectK(10, TASKS, gate="per_example", num_experts=5),
    }


@pytest.mark.parametrize("name", list(models()))
def test_shapes_parameter_split_and_detached_decode(name: str) -> None:
    model = models()[name].eval()
    x = torch.randn(7, 10)
    outputs = model(x)
    assert {task: out.shape for task, out in outputs.items()} == {
        task: torch.Size([7, size]) for task, size in SIZES.items()
    }
    # shared ∪ task parameters: every parameter exactly once
    ids = [id(p) for p in model.shared_parameters()]
    for task in SIZES:
        ids += [id(p) for p in model.task_parameters(task)]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    # the trainer's path: each head on its own tap of z
    taps = TaskTaps(model.encode(x), list(SIZES))
    for task in SIZES:
        alone = model.decode_task(task, taps[task], x)
        torch.testing.assert_close(alone, outputs[task], rtol=0, atol=0)


# ----------------------------------------------------------------------------- cross-stitch


def test_cross_stitch_representation_is_one_block_per_column() -> None:
    model = CrossStitch(10, TASKS, hidden_sizes=[8, 6])
    assert model.encode(torch.randn(4, 10)).shape == (4, 3 * 6)
    assert CrossStitch.feature_gradients is False
    # the paper's α_S/α_D initialisation: 0.9 on the diagonal, the rest split evenly
    expected = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])
    for alpha in model.alphas:
        torch.testing.assert_close(alpha.data, expected)
    channel = CrossStitch(10, TASKS, hidden_sizes=[8, 6], stitch="channel")
    assert [tuple(a.shape) for a in channel.alphas] == [(3, 3, 8), (3, 3, 6)]
    torch.testing.assert_close(channel.alphas[1].data[:, :, 4], expected)
    single = CrossStitch(10, TASKS[:1])  # mode=single_task: one column, α = 1
    assert [a.item() for a in single.alphas] == [1.0, 1.0]


def test_identity_stitch_is_k_separate_mlps() -> None:
    torch.manual_seed(1)
    model = CrossStitch(10, TASKS, hidden_sizes=[8, 6], self_weight=1.0).eval()
    x = torch.randn(5, 10)
    before = model(x)
    for k, task in enumerate(SIZES):
        layers = [model.layers[0][k], nn.ReLU(), model.layers[1][k], nn.ReLU(), model.heads[task]]
        torch.testing.assert_close(nn.Sequential(*layers)(x), before[task])
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        for layer in perturbed.layers:
            layer[1].weight.add_(1.0)  # column b only
    after = perturbed(x)
    torch.testing.assert_close(after["a"], before["a"], rtol=0, atol=0)
    torch.testing.assert_close(after["c"], before["c"], rtol=0, atol=0)
    assert not torch.allclose(after["b"], before["b"])


@pytest.mark.parametrize("stitch", ["layer", "channel"])
def test_stitch_mixes_as_computed_by_hand(stitch: str) -> None:
    torch.manual_seed(2)
    model = CrossStitch(10, TASKS, hidden_sizes=[4], stitch=stitch, self_weight=0.9)
    x = torch.randn(3, 10)
    h = [torch.relu(x @ layer.weight.T + layer.bias) for layer in model.layers[0]]
    z = model.encode(x)
    for k in range(3):
        others = [h[j] for j in range(3) if j != k]
        by_hand = 0.9 * h[k] + 0.05 * others[0] + 0.05 * others[1]
        torch.testing.assert_close(z[:, 4 * k : 4 * (k + 1)], by_hand)


def test_cross_stitch_refuses_features_grad_source(mtl_run) -> None:
    outcome = mtl_run("model=cross_stitch", "weighting=mgda", "weighting.grad_source=features")
    assert_one_line(
        outcome,
        "weighting.grad_source=features is not supported by model CrossStitch: its "
        "representation is one block per task",
    )


# ------------------------------------------------------------------------------- DSelect-k


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_smooth_step_values_and_derivative(gamma: float) -> None:
    t = torch.tensor(
        [-gamma, -gamma / 2, 0.0, gamma / 4, gamma / 2, gamma], dtype=torch.float64
    ).requires_grad_()
    values = smooth_step(t, gamma)
    # S(γ/4) = -2/64 + 3/8 + 1/2 = 0.84375 for every γ
    expected = torch.tensor([0.0, 0.0, 0.5, 0.84375, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(values, expected)
    (grad,) = torch.autograd.grad(values.sum(), t)
    # S'(t) = -6t²/γ³ + 3/(2γ): 0 at ±γ/2 and outside, 3/(2γ) at 0, 9/(8γ) at γ/4
    by_hand = torch.tensor(
        [0.0, 0.0, 3 / (2 * gamma), 9 / (8 * gamma), 0.0, 0.0], dtype=torch.float64
    )
    torch.testing.assert_close(grad, by_hand)


def test_gate_weights_are_a_distribution_and_become_k_sparse() -> None:
    torch.manual_seed(3)
    gate = DSelectKGate(num_experts=8, top_k=2, gamma=1.0)
    weights = gate()
    assert weights.shape == (8,) and (weights >= 0).all()
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    assert (weights > 0).all()  # near-uniform at initialisation (z ≈ 0)
    with torch.no_grad():  # codes 101 → expert 5, 001 → expert 1 (beyond ±γ/2: exact 0/1)
        gate.z_logits.copy_(torch.tensor([[5.0, -5.0, 5.0], [-5.0, -5.0, 5.0]]))
        gate.w_logits.copy_(torch.tensor([0.3, -0.2]))
    weights = gate()
    mixture = torch.softmax(torch.tensor([0.3, -0.2]), 0)
    expected = torch.zeros(8)
    expected[5], expected[1] = mixture
    torch.testing.assert_close(weights, expected, rtol=0, atol=1e-7)
    assert int((weights != 0).sum()) == 2
    # per example: one distribution per row, at most k non-zeros when saturated
    routed = DSelectKGate(num_experts=8, top_k=3, gamma=1.0, in_features=4)
    x = torch.randn(9, 4)
    rows = routed(x)
    assert rows.shape == (9, 8) and (rows >= 0).all()
    torch.testing.assert_close(rows.sum(1), torch.ones(9))
    with torch.no_grad():
        routed.z_linear.weight.mul_(1e4)
    assert ((routed(x) != 0).sum(1) <= 3).all()


def _hand_entropy(r: list[float]) -> float:
    return -sum(p * math.log(p + 1e-6) for p in r)


def test_entropy_penalty_by_hand() -> None:
    # one task, 4 experts (m = 2), k = 2; S(0.25) = 0.84375, S(0) = 0.5, S(-0.1) = 0.352, S(.6) = 1
    model = DSelectK(10, TASKS[:1], num_experts=4, top_k=2, entropy_weight=0.1)
    gate = model.gates["a"]
    with torch.no_grad():
        gate.z_logits.copy_(torch.tensor([[0.25, 0.0], [-0.1, 0.6]]))
    _, selectors = gate.selectors()
    first = [0.078125, 0.078125, 0.421875, 0.421875]  # codes 00, 01, 10, 11
    second = [0.0, 0.648, 0.0, 0.352]
    torch.testing.assert_close(selectors, torch.tensor([first, second]))
    penalty = model.regularization()
    assert penalty.shape == () and torch.isfinite(penalty)
    by_hand = 0.1 * (_hand_entropy(first) + _hand_entropy(second))
    assert penalty.item() == pytest.approx(by_hand, rel=1e-5)
    # the exact entropies (0·log 0 = 0) agree to the ε
    exact = -sum(p * math.log(p) for p in first + second if p > 0)
    assert penalty.item() == pytest.approx(0.1 * exact, abs=1e-5)
    penalty.backward()
    assert gate.z_logits.grad is not None and gate.z_logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.shared_parameters())
    # 3 experts (m = 2, code 11 names none): + Σ_i 1 / Σ_reachable r, as the official code
    odd = DSelectK(10, TASKS[:1], num_experts=3, top_k=2, entropy_weight=0.1)
    with torch.no_grad():
        odd.gates["a"].z_logits.copy_(torch.tensor([[0.25, 0.0], [-0.1, 0.6]]))
    by_hand = 0.1 * (_hand_entropy(first[:3]) + _hand_entropy(second[:3]))
    by_hand += 1 / sum(first[:3]) + 1 / sum(second[:3])
    assert odd.regularization().item() == pytest.approx(by_hand, rel=1e-5)
    assert DSelectK(10, TASKS, entropy_weight=0.0).regularization() is None


def test_per_example_penalty_is_the_row_mean() -> None:
    torch.manual_seed(4)
    model = DSelectK(10, TASKS[:1], num_experts=4, gate="per_example", entropy_weight=1.0)
    assert model.regularization() is None  # no training forward yet
    x = torch.randn(6, 10)
    model.train()(x)
    _, selectors = model.gates["a"].selectors(x)  # [6, k, E]
    rows = [sum(_hand_entropy(s.tolist()) for s in row) for row in selectors]
    assert model.regularization().item() == pytest.approx(sum(rows) / 6, rel=1e-5)


def _train_dselect_k(tmp_path: Path, entropy_weight: float) -> tuple[DSelectK, list[float]]:
    """2 epochs of equal weighting from gates at z = 0.2; the penalties the trainer read."""
    seed_everything(0, deterministic=True)
    data = make_synthetic(
        n=300, num_features=10,
        tasks={"a": {"type": "multiclass", "num_classes": 5}, "b": {"type": "multiclass",
               "num_classes": 3}, "c": {"type": "binary", "num_classes": 2}},
        signal=3.0, noise=1.0, relatedness=0.5, nonlinearity=0.5, seed=0,
        split={"train": 0.6, "val": 0.2, "test": 0.2},
    )  # fmt: skip
    model = DSelectK(data.num_features, data.tasks, entropy_weight=entropy_weight)
    with torch.no_grad():  # away from S = 1/2, where the entropy's gradient vanishes
        for gate in model.gates.values():
            gate.z_logits.fill_(0.2)
    calls: list[float] = []
    penalty = model.regularization

    def spy() -> torch.Tensor | None:
        value = penalty()
        calls.append(value.item())
        return value

    model.regularization = spy  # type: ignore[method-assign]
    settings = TrainerSettings(
        epochs=2, batch_size=64, seed=0, progress=Progress.none, checkpoint=False
    )
    weighting = Equal(data.task_names)
    Trainer(
        model, weighting, data, torch.optim.Adam, 2e-2, settings, torch.device("cpu"), tmp_path
    ).fit()
    model.regularization = penalty  # type: ignore[method-assign]
    return model, calls


def test_training_backpropagates_and_reduces_the_entropy(tmp_path: Path) -> None:
    start = DSelectK(10, TASKS, entropy_weight=1.0)
    with torch.no_grad():
        for gate in start.gates.values():
            gate.z_logits.fill_(0.2)
    initial = start.regularization().item()
    model, calls = _train_dselect_k(tmp_path, entropy_weight=1.0)
    assert len(calls) == 2 * math.ceil(180 / 64)  # read once per step
    assert all(math.isfinite(v) for v in calls)
    for gate in model.gates.values():
        assert gate.z_logits.grad is not None and gate.z_logits.grad.abs().sum() > 0
    # the same training with a negligible weight: the task losses alone move the gates less
    (tmp_path / "again").mkdir()
    without, _ = _train_dselect_k(tmp_path / "again", entropy_weight=1e-12)
    without.entropy_weight = 1.0
    after, baseline = model.regularization().item(), without.regularization().item()
    assert after < baseline - 0.5 and baseline < initial


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model=dselect_k", "model.top_k=9"],
            "model.top_k=9 is not allowed: select 1 to model.num_experts=8 experts",
        ),
        (
            ["model=dselect_k", "model.gamma=0"],
            "model.gamma=0.0 is not allowed: the smooth-step's width must be positive",
        ),
        (["model=dselect_k", "model.gamma=-1"], "model.gamma=-1.0 is not allowed"),
        (["model=dselect_k", "model.num_experts=1"], "model.num_experts=1 is not allowed"),
        (["model=dselect_k", "model.entropy_weight=-1"], "model.entropy_weight=-1.0 is not"),
        (["model=dselect_k", "model.expert_sizes=[]"], "model.expert_sizes=[] is not allowed"),
        (["model=cross_stitch", "model.self_weight=1.5"], "model.self_weight=1.5 is not allowed"),
        (["model=cross_stitch", "model.hidden_sizes=[]"], "model.hidden_sizes=[] is not allowed"),
    ],
)
def test_bad_sizes_are_one_line_errors(mtl_run, overrides: list[str], message: str) -> None:
    assert_one_line(mtl_run(*overrides), message)


def test_bad_sizes_in_python() -> None:
    with pytest.raises(ConfigError, match=r"^model.top_k=3 is not allowed"):
        DSelectK(10, TASKS, num_experts=2, top_k=3)
    with pytest.raises(ConfigError, match=r"^model.gamma=0 is not allowed"):
        DSelectK(10, TASKS, gamma=0)


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=cross_stitch", "weighting=equal"],
        ["model=cross_stitch", "model.stitch=channel", "weighting=mgda"],
        ["model=dselect_k", "weighting=equal"],
        ["model=dselect_k", "weighting=mgda", "weighting.grad_source=params"],
        ["model=dselect_k", "weighting=mgda", "weighting.grad_source=features"],
        [
            "model=dselect_k",
            "model.gate=per_example",
            "weighting=mgda",
            "weighting.grad_source=features",
        ],
    ],
    ids=lambda o: "-".join(v.split("=")[-1] for v in o),
)
def test_trains_through_the_cli(mtl_run, overrides: list[str]) -> None:
    outcome = mtl_run(*overrides, "trainer.epochs=2", "dataset.n=300")
    assert outcome.code == 0, outcome.stderr
    metrics = outcome.metrics
    assert len(metrics) == 2
    losses = metrics[[f"{split}/loss/{t}" for split in ("train", "val") for t in SIZES]]
    assert losses.notna().all().all() and (losses.abs() < 1e6).all().all()
    assert outcome.results["status"] == "completed"
