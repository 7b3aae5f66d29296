"""Stochastic gradient methods: MoCo, DB-MTL, MoDo and SDMGrad.

Expected values are worked by hand (arithmetic in the comments), re-derived from the published
update rules in small independent loops (LibMTL's formulas for MoCo and DB-MTL), or taken from
torchjd's MoDoWeighting / SDMGradWeighting on the same matrices.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_weighting_properties import make_method

from mtl_runner.errors import ConfigError
from mtl_runner.weighting._stochastic import project_onto_simplex
from mtl_runner.weighting.base import StepContext

# the running example: g_1 = (3, 4) with ‖g_1‖ = 5, g_2 = (0, 2) with ‖g_2‖ = 2; L = (1, 2)
J = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
LOSSES = torch.tensor([1.0, 2.0])


def close(actual, expected, tol: float = 1e-5) -> None:
    expected = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual.double(), expected, rtol=tol, atol=tol)


def jacobian_sequence(num_tasks: int, width: int, steps: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(num_tasks, width, generator=generator),
            torch.rand(num_tasks, generator=generator) + 0.2,
        )
        for _ in range(steps)
    ]


# ------------------------------------------------------------------------------ simplex projection
def test_projection_by_hand() -> None:
    # v = (0.3, 0.1, -0.5): the two largest need +0.3 each to sum to 1 → (0.6, 0.4, 0)
    close(project_onto_simplex(torch.tensor([0.3, 0.1, -0.5], dtype=torch.float64)), [0.6, 0.4, 0])
    close(project_onto_simplex(torch.tensor([2.0, 0.0], dtype=torch.float64)), [1, 0])
    close(project_onto_simplex(torch.tensor([0.6, 0.6], dtype=torch.float64)), [0.5, 0.5])
    # shift invariance keeps huge inputs exact
    huge = torch.tensor([1e8 + 0.3, 1e8 + 0.1, 1e8 - 0.5], dtype=torch.float64)
    close(project_onto_simplex(huge), [0.6, 0.4, 0])
    close(project_onto_simplex(torch.tensor([1e17, -1e17, 3.0], dtype=torch.float64)), [1, 0, 0])


def test_projection_matches_a_quadratic_program() -> None:
    quadprog = pytest.importorskip("quadprog")
    generator = np.random.default_rng(0)
    for size in (2, 3, 5, 10):
        for _ in range(20):
            v = generator.normal(scale=2.0, size=size)
            # min ½‖w‖² − vᵀw  s.t.  Σw = 1 (equality), w ≥ 0
            constraints = np.hstack([np.ones((size, 1)), np.eye(size)])
            bounds = np.concatenate([[1.0], np.zeros(size)])
            expected = quadprog.solve_qp(np.eye(size), v, constraints, bounds, meq=1)[0]
            close(project_onto_simplex(torch.from_numpy(v)), expected, tol=1e-9)


# ------------------------------------------------------------------------------ MoCo
def test_moco_first_step_by_hand() -> None:
    method = make_method("moco", 2)
    result = method.aggregate(J, LOSSES)
    # ĝ_k = g_k L_k / ‖g_k‖: ĝ_1 = (0.6, 0.8), ĝ_2 = (0, 2); β_1 = 0.5 → y = ((0.3, 0.4), (0, 1))
    # YYᵀ = [[0.25, 0.4], [0.4, 1]]; YYᵀλ_0 = (0.325, 0.7) at λ_0 = (0.5, 0.5)
    # λ_0 − 0.1·(0.325, 0.7) = (0.4675, 0.43); projection adds 0.05125 → (0.51875, 0.48125)
    close(result.weights, [0.51875, 0.48125])
    # d = Yᵀλ = (0.51875·0.3, 0.51875·0.4 + 0.48125·1)
    close(result.direction, [0.155625, 0.68875])


def test_moco_softmax_update_by_hand() -> None:
    method = make_method("moco", 2, lambda_update="softmax")
    result = method.aggregate(J, LOSSES)
    # softmax(0.4675, 0.43) = (σ(0.0375), 1 − σ(0.0375)) = (0.5093739, 0.4906261)
    close(result.weights, [0.5093739015, 0.4906260985])
    close(result.direction, [0.3 * 0.5093739015, 0.4 * 0.5093739015 + 0.4906260985])


def test_moco_without_normalisation_tracks_raw_gradients() -> None:
    method = make_method("moco", 2, gradient_normalization="none", lambda_rate=1e-3)
    result = method.aggregate(J, LOSSES)
    # y = 0.5·J = ((1.5, 2), (0, 1)); YYᵀλ_0 = (0.5·6.25 + 0.5·2, 0.5·2 + 0.5·1) = (4.125, 1.5)
    # λ_0 − 1e-3·(4.125, 1.5) = (0.495875, 0.4985); projection adds 0.0028125
    close(result.weights, [0.4986875, 0.5013125])
    close(result.direction, [1.5 * 0.4986875, 2 * 0.4986875 + 0.5013125])


def _moco_reference(steps, beta, beta_sigma, gamma, gamma_sigma, rho, softmax):
    """LibMTL's MoCo update in numpy (1e-8 added to ‖g‖ as there), with either λ update."""
    y, lam, out = None, None, []
    for t, (jacobian, losses) in enumerate(steps, start=1):
        g = jacobian.double().numpy()
        g = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-8) * losses.double().numpy()[:, None]
        y = np.zeros_like(g) if y is None else y
        lam = np.full(len(g), 1 / len(g)) if lam is None else lam
        y = y - beta / t**beta_sigma * (y - g)
        step = lam - gamma / t**gamma_sigma * (y @ y.T + rho * np.eye(len(g))) @ lam
        if softmax:
            lam = np.exp(step - step.max()) / np.exp(step - step.max()).sum()
        else:
            lam = project_onto_simplex(torch.from_numpy(step)).numpy()
        out.append((lam, y.T @ lam))
    return out


@pytest.mark.parametrize("update", ["softmax", "projection"])
def test_moco_follows_the_update_rule_over_steps(update: str) -> None:
    steps = jacobian_sequence(3, 6, steps=5)
    options = dict(tracking_rate=0.7, tracking_decay=0.5, lambda_rate=0.3, lambda_decay=0.25)
    method = make_method("moco", 3, regularization=0.2, lambda_update=update, **options)
    expected = _moco_reference(steps, 0.7, 0.5, 0.3, 0.25, 0.2, softmax=update == "softmax")
    for (jacobian, losses), (lam, direction) in zip(steps, expected):
        result = method.aggregate(jacobian, losses)
        close(result.weights, lam, tol=1e-5)
        close(result.direction, direction, tol=1e-5)


def test_moco_current_batch_enters_with_beta_t() -> None:
    steps = jacobian_sequence(3, 5, steps=2, seed=3)
    method = make_method("moco", 3)
    method.aggregate(*steps[0])
    previous = method.state_dict()["tracking"]
    jacobian, losses = steps[1]
    result = method.aggregate(jacobian, losses)
    beta = 0.5 / math.sqrt(2)  # β_2 = β / 2^0.5
    lam = result.weights
    memory = (1 - beta) * (lam @ previous)
    scale = beta * lam * losses / jacobian.norm(dim=1)  # β_t λ_k L_k / ‖g_k‖
    close(result.direction, memory + scale @ jacobian)


def test_moco_zero_and_underflowing_rows_track_zero() -> None:
    # a zero row, and a row whose norm underflows to 0 in float32 (x² < the smallest subnormal):
    # ĝ must be 0 for both, not x / 0 = ±inf
    jacobian = torch.tensor([[0.0, -0.0, 0.0], [1e-30, -1e-30, 0.0], [3.0, 0.0, 4.0]])
    assert jacobian[1].norm() == 0
    method = make_method("moco", 3)
    result = method.aggregate(jacobian, torch.tensor([1.0, 2.0, 1.0]))
    tracked = method.state_dict()["tracking"]
    assert torch.equal(tracked[:2], torch.zeros(2, 3))
    close(tracked[2], [0.3, 0.0, 0.4])
    assert torch.isfinite(result.weights).all() and torch.isfinite(result.direction).all()


def test_moco_restarts_tracking_when_the_width_changes() -> None:
    method = make_method("moco", 2)
    method.aggregate(J, LOSSES)
    wider = torch.tensor([[3.0, 0.0, 4.0], [0.0, 2.0, 0.0]])
    result = method.aggregate(wider, LOSSES)
    # y restarts from 0: y = β_2 ĝ with β_2 = 0.5/√2, ĝ = ((0.6, 0, 0.8), (0, 2, 0))
    beta = 0.5 / math.sqrt(2)
    tracked = method.state_dict()["tracking"]
    close(tracked, beta * torch.tensor([[0.6, 0.0, 0.8], [0.0, 2.0, 0.0]]))
    assert method.state_dict()["step"] == 2 and result.direction.shape == (3,)


# ------------------------------------------------------------------------------ DB-MTL
def test_db_mtl_two_steps_by_hand() -> None:
    method = make_method("db_mtl", 2)
    first = method.aggregate(J, LOSSES)
    # ∇log L_k = g_k / L_k: h = ((3, 4), (0, 1)); ĝ = 0.1·h = ((0.3, 0.4), (0, 0.1))
    # ‖ĝ‖ = (0.5, 0.1) → α = (1, 5); d = (0.3, 0.4) + 5·(0, 0.1) = (0.3, 0.9)
    close(first.direction, [0.3, 0.9])
    close(first.weights, [1.0, 2.5])  # α_k / L_k = (1/1, 5/2)
    second = method.aggregate(J, LOSSES)
    # ĝ = 0.9·0.1·h + 0.1·h = 0.19·h; α is still (1, 5); d = 0.19·(3, 4 + 5) = (0.57, 1.71)
    close(second.direction, [0.57, 1.71])
    close(second.weights, [1.0, 2.5])


def test_db_mtl_momentum_decay() -> None:
    method = make_method("db_mtl", 2, momentum_decay=1.0)
    method.aggregate(J, LOSSES)
    # β_2 = 0.9/2 = 0.45: ĝ = 0.45·0.1·h + 0.55·h = 0.595·h → d = 0.595·(3, 9)
    close(method.aggregate(J, LOSSES).direction, [1.785, 5.355])


def test_db_mtl_without_momentum_is_a_combination_of_the_current_gradients() -> None:
    method = make_method("db_mtl", 3, momentum=0.0)
    for jacobian, losses in jacobian_sequence(3, 7, steps=3):
        result = method.aggregate(jacobian, losses)
        close(result.direction, result.weights @ jacobian)
        # every α_k ĝ_k has the largest norm: c_k ‖g_k‖ is the same for all k
        norms = result.weights * jacobian.norm(dim=1)
        close(norms, torch.full((3,), norms.max().item()))


def test_db_mtl_matches_libmtl_update() -> None:
    steps = jacobian_sequence(3, 6, steps=5, seed=1)
    method = make_method("db_mtl", 3, momentum=0.8, momentum_decay=0.3)
    buffer = np.zeros((3, 6))
    for t, (jacobian, losses) in enumerate(steps, start=1):
        # LibMTL: grads of log(L + 1e-8); buffer = g + β_t (buffer − g); α = max/(‖·‖ + 1e-8)
        g = jacobian.double().numpy() / (losses.double().numpy()[:, None] + 1e-8)
        buffer = g + 0.8 / t**0.3 * (buffer - g)
        norms = np.linalg.norm(buffer, axis=1)
        alpha = norms.max() / (norms + 1e-8)
        close(method.aggregate(jacobian, losses).direction, alpha @ buffer, tol=1e-5)


def test_db_mtl_zero_gradient_task_gets_no_weight() -> None:
    method = make_method("db_mtl", 2)
    result = method.aggregate(torch.tensor([[3.0, 4.0], [0.0, 0.0]]), LOSSES)
    close(result.weights, [1.0, 0.0])
    close(result.direction, [0.3, 0.4])


# ------------------------------------------------------------------------------ MoDo
def test_modo_single_batch_by_hand() -> None:
    method = make_method("modo", 2)
    result = method.aggregate(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), LOSSES)
    # JJᵀ = diag(1, 4); (JJᵀ + 0.1 I)λ_0 = (0.55, 2.05); λ_0 − 0.1·that = (0.445, 0.295)
    # projection adds 0.13 → (0.575, 0.425)
    close(result.weights, [0.575, 0.425])
    assert result.direction is None  # d = λᵀJ


@pytest.mark.parametrize("rate", [0.1, 1e-3])
def test_modo_matches_torchjd(rate: float) -> None:
    torchjd = pytest.importorskip("torchjd.aggregation")
    reference = torchjd.MoDoWeighting(gamma=rate, rho=0.1)
    method = make_method("modo", 3, lambda_rate=rate)
    for jacobian, losses in jacobian_sequence(3, 8, steps=4, seed=2):
        jacobian = jacobian.double()  # float64 products: compare the algorithms, not roundings
        expected = reference(jacobian @ jacobian.T)
        close(method.aggregate(jacobian, losses).weights, expected, tol=1e-7)


# ------------------------------------------------------------------------------ SDMGrad
def test_sdmgrad_one_inner_step_by_hand() -> None:
    jacobian = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # A = diag(1, 4); s = mean(√1, √4) = 1.5, A/s² = diag(4/9, 16/9); a = A𝟙/2 = (2/9, 8/9)
    # ∇ = A w + 0.3 a at w = (0.5, 0.5): (2/9 + 0.3·2/9, 8/9 + 0.3·8/9) = (0.288889, 1.155556)
    slow = make_method("sdmgrad", 2, inner_steps=1, inner_lr=0.1).aggregate(jacobian, LOSSES)
    # w − 0.1∇ = (0.471111, 0.384444), projection adds 0.072222 → w = (0.543333, 0.456667)
    # c = (w + 0.3/2) / 1.3 = (0.533333, 0.466667)
    close(slow.weights, [0.693333 / 1.3, 0.606667 / 1.3])
    fast = make_method("sdmgrad", 2, inner_steps=1).aggregate(jacobian, LOSSES)
    # lr 10: w − 10∇ = (−2.3889, −11.0556) projects onto (1, 0); c = (1.15, 0.15) / 1.3
    close(fast.weights, [1.15 / 1.3, 0.15 / 1.3])


@pytest.mark.parametrize("inner_lr", [10.0, 5.0])
def test_sdmgrad_matches_torchjd(inner_lr: float) -> None:
    torchjd = pytest.importorskip("torchjd.aggregation")
    reference = torchjd.SDMGradWeighting(lr=inner_lr, momentum=0.5, n_iter=20, lambda_=0.3)
    method = make_method("sdmgrad", 3, inner_lr=inner_lr)
    for jacobian, losses in jacobian_sequence(3, 8, steps=4, seed=4):
        jacobian = jacobian.double()  # float64 products: compare the algorithms, not roundings
        expected = reference(jacobian @ jacobian.T)
        close(method.aggregate(jacobian, losses).weights, expected, tol=1e-7)


def test_sdmgrad_weights_mix_w_and_the_mean() -> None:
    for jacobian, losses in jacobian_sequence(4, 6, steps=3, seed=5):
        weights = make_method("sdmgrad", 4, regularization=0.5).aggregate(jacobian, losses).weights
        # c = (w + λ/K)/(1 + λ) with w on the simplex: Σc = 1 and c_k ≥ (λ/K)/(1 + λ)
        close(weights.sum(), 1.0)
        assert (weights >= 0.5 / 4 / 1.5 - 1e-6).all()
        heavy = make_method("sdmgrad", 4, regularization=1e6).aggregate(jacobian, losses)
        close(heavy.weights, torch.full((4,), 0.25), tol=1e-5)


# ------------------------------------------------------------------------------ several batches
class TinyProblem:
    """θ ∈ ℝ³ shared, one scalar head h_k per task; on batch X ([K, 3]), L_k = h_k · (x_k·θ).

    So ∇_θ L_k = h_k x_k (J = X when h = 1) and ∇_{h_k} L_k = x_k·θ.
    """

    def __init__(self, batches: list[torch.Tensor], scale: float = 1.0) -> None:
        self.theta = torch.nn.Parameter(torch.tensor([1.0, -1.0, 0.5]))
        self.heads = [torch.nn.Parameter(torch.ones(1)) for _ in range(batches[0].shape[0])]
        self.pending = list(batches[1:])
        self.first = batches[0]
        self.draws = 0
        self.scale = scale

    def losses(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([h[0] * (x @ self.theta) for h, x in zip(self.heads, batch)])

    def draw(self):
        self.draws += 1
        if not self.pending:
            return None
        batch = self.pending.pop(0)
        return self.losses(batch), self.theta * 1.0

    def step(self, method) -> torch.Tensor:
        names = method.task_names
        context = StepContext(
            backward=lambda total: total.backward(),
            shared_parameters=[self.theta],
            task_parameters={name: [h] for name, h in zip(names, self.heads)},
            shared_representation=self.theta * 1.0,
            draw_batch=self.draw,
            loss_scale=self.scale,
        )
        return method.backward(self.losses(self.first), context)

    def head_grads(self) -> torch.Tensor:
        return torch.cat([h.grad for h in self.heads])


def batches(count: int, seed: int = 7) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 3, generator=generator) for _ in range(count)]


def test_modo_uses_three_batches() -> None:
    torchjd = pytest.importorskip("torchjd.aggregation")
    x1, x2, x3 = batches(4)[:3]
    problem = TinyProblem([x1, x2, x3, torch.zeros(3, 3)])
    weights = problem.step(make_method("modo", 3))
    assert problem.draws == 2 and len(problem.pending) == 1  # this batch + 2 fresh ones
    expected = torchjd.MoDoWeighting(gamma=0.1, rho=0.1)(x1.double() @ x2.double().T)
    close(weights, expected)
    close(problem.theta.grad, weights @ x3)  # d = J_3ᵀλ
    close(problem.head_grads(), weights * (x3 @ problem.theta.detach()))  # λ_k ∇_h L_k on batch 3


def test_modo_reuses_batches_at_the_end_of_the_epoch() -> None:
    x1, x2 = batches(2)
    problem = TinyProblem([x1, x2])
    weights = problem.step(make_method("modo", 3))
    assert problem.draws == 2  # the second draw found the epoch spent
    reference = make_method("modo", 3)
    close(weights, reference.update(x1, x2))  # λ from batches 1 and 2 ...
    close(problem.theta.grad, weights @ x2)  # ... and d from batch 2
    alone = TinyProblem([x1])
    weights = alone.step(make_method("modo", 3))
    assert alone.draws == 1
    close(weights, make_method("modo", 3).aggregate(x1, torch.ones(3)).weights)
    close(alone.theta.grad, weights @ x1)


@pytest.mark.parametrize("num_tasks", [2, 3, 10])
def test_sdmgrad_inner_steps_on_floats_equal_the_numpy_steps(num_tasks: int) -> None:
    # the few-task route (Python floats around numpy's A w) must give numpy's values exactly,
    # also where η = 10 makes the iteration jump between faces of the simplex
    method = make_method("sdmgrad", num_tasks)
    generator = np.random.default_rng(num_tasks)
    for scale in (1e-8, 1.0, 1e8):
        left, right = generator.standard_normal((2, num_tasks, 7)) * scale
        matrix = left @ right.T
        matrix /= np.sqrt(np.abs(matrix.diagonal())).mean() ** 2
        start = generator.dirichlet(np.ones(num_tasks))
        floats = method._inner_steps(matrix, start)
        assert np.array_equal(floats, method._inner_steps_array(matrix, start))


def test_sdmgrad_uses_three_batches() -> None:
    torchjd = pytest.importorskip("torchjd.aggregation")
    x1, x2, x3 = batches(3, seed=8)
    problem = TinyProblem([x1, x2, x3])
    weights = problem.step(make_method("sdmgrad", 3))
    expected = torchjd.SDMGradWeighting(lr=10.0, momentum=0.5, n_iter=20, lambda_=0.3)(
        x2.double() @ x3.double().T  # A = J_ξ J_ξ'ᵀ from the two drawn batches
    )
    close(weights, expected)
    close(problem.theta.grad, weights @ x1)  # d = (J_ζᵀw + λ ḡ_ζ)/(1+λ) on this batch
    close(problem.head_grads(), weights * (x1 @ problem.theta.detach()))


def test_sdmgrad_reuses_batches_at_the_end_of_the_epoch() -> None:
    x1, x2 = batches(2, seed=9)
    problem = TinyProblem([x1, x2])
    weights = problem.step(make_method("sdmgrad", 3))
    close(weights, make_method("sdmgrad", 3).update(x2, x1))  # ξ = drawn batch, ξ' = this one
    close(problem.theta.grad, weights @ x1)


@pytest.mark.parametrize("name", ["modo", "sdmgrad"])
def test_loss_scale_multiplies_written_gradients_only(name: str) -> None:
    plain, scaled = TinyProblem(batches(3)), TinyProblem(batches(3), scale=8.0)
    weights = plain.step(make_method(name, 3))
    close(scaled.step(make_method(name, 3)), weights)
    close(scaled.theta.grad, 8.0 * plain.theta.grad)
    close(scaled.head_grads(), 8.0 * plain.head_grads())


# ------------------------------------------------------------------------------ fp16 overflow
OVERFLOWED = torch.tensor([[3.0, float("inf")], [0.0, 2.0]])


@pytest.mark.parametrize("name", ["moco", "db_mtl", "modo", "sdmgrad"])
def test_overflowed_step_keeps_the_state(name: str) -> None:
    """An fp16 overflow (which the loss scaler skips) must not poison the state."""
    method = make_method(name, 2)
    method.aggregate(J, LOSSES)
    before = method.state_dict()
    result = method.aggregate(OVERFLOWED, LOSSES)
    after = method.state_dict()
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(after[key], value)
    assert torch.isfinite(result.weights).all()
    if result.direction is not None:  # the scaler must still see the overflow
        assert not torch.isfinite(result.direction).all()


@pytest.mark.parametrize("name", ["modo", "sdmgrad"])
def test_overflow_in_a_drawn_batch_reaches_the_shared_gradient(name: str) -> None:
    x1, x2, x3 = batches(3)
    method = make_method(name, 3)
    before = method.state_dict()
    x2[0, 0] = float("inf")
    problem = TinyProblem([x1, x2, x3])
    weights = problem.step(method)
    assert torch.isfinite(weights).all()
    assert not torch.isfinite(problem.theta.grad).any()  # the scaler skips this step
    for key, value in before.items():
        torch.testing.assert_close(method.state_dict()[key], value)


# ------------------------------------------------------------------------------ options
@pytest.mark.parametrize(
    ("name", "key", "value", "allowed"),
    [
        ("moco", "tracking_rate", 0.0, "in (0, 1]"),
        ("moco", "tracking_rate", 1.5, "in (0, 1]"),
        ("moco", "tracking_decay", -1.0, ">= 0"),
        ("moco", "lambda_rate", 0.0, "positive"),
        ("moco", "lambda_decay", -0.5, ">= 0"),
        ("moco", "regularization", -0.1, ">= 0"),
        ("db_mtl", "momentum", 1.0, "in [0, 1)"),
        ("db_mtl", "momentum_decay", -1.0, ">= 0"),
        ("modo", "lambda_rate", -1.0, "positive"),
        ("modo", "regularization", -1.0, ">= 0"),
        ("sdmgrad", "regularization", -1.0, ">= 0"),
        ("sdmgrad", "inner_steps", 0, "at least 1"),
        ("sdmgrad", "inner_lr", 0.0, "positive"),
        ("sdmgrad", "inner_momentum", 1.0, "in [0, 1)"),
    ],
)
def test_bad_values_are_rejected(name: str, key: str, value: float, allowed: str) -> None:
    with pytest.raises(ConfigError) as error:
        make_method(name, 3, **{key: value})
    message = str(error.value)
    assert message == f"weighting.{key}={value} is not allowed: it must be {allowed}"


def test_bad_choice_is_rejected() -> None:
    with pytest.raises(ConfigError, match="weighting.lambda_update="):
        make_method("moco", 3, lambda_update="sigmoid")


@pytest.mark.parametrize("name", ["moco", "db_mtl", "modo", "sdmgrad"])
def test_features_source_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="grad_source=features is not supported.*use params"):
        make_method(name, 3, grad_source="features")


def test_numpy_simplex_projection_equals_the_torch_one() -> None:
    from mtl_runner.weighting._stochastic import project_onto_simplex, project_onto_simplex_array

    generator = torch.Generator().manual_seed(3)
    for scale in (1e-8, 1.0, 1e8):
        for size in (1, 2, 5, 10):
            vector = torch.randn(size, generator=generator, dtype=torch.float64) * scale
            expected = project_onto_simplex(vector)
            got = project_onto_simplex_array(vector.numpy())
            torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-12, atol=1e-15)
            assert got.sum() == pytest.approx(1.0) and (got >= 0).all()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 32])
def test_float_simplex_projection_is_the_numpy_one_bit_for_bit(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the float route (SDMGrad's inner steps, K <= 32) must round exactly as the NumPy route
    from mtl_runner.weighting import _stochastic

    generator = np.random.default_rng(size)
    vectors = [
        generator.standard_normal(size) * 10.0 ** generator.uniform(-8, 20) for _ in range(300)
    ]
    vectors += [np.full(size, 0.5), np.arange(size, dtype=np.float64)]  # ties; a spread > _SPREAD
    floats = [_stochastic.project_onto_simplex_array(v) for v in vectors]
    monkeypatch.setattr(_stochastic, "FLOAT_ROUTE_SIZE", 0)
    for vector, expected in zip(vectors, floats):
        got = _stochastic.project_onto_simplex_array(vector)
        np.testing.assert_array_equal(got, expected)
