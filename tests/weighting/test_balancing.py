"""Balancing methods: IMTL, Aligned-MTL, FairGrad, ExcessMTL and GradNorm.

Against published regression values (torchjd's J = [[-4, 1, 1], [6, 1, 1]]), hand-computed small
cases, each method's own definition, and torchjd where it implements the method.
"""

from __future__ import annotations

import copy
import io
import math
import warnings

import numpy as np
import pytest
import torch
from test_weighting_properties import make_method

from mtl_runner.errors import ConfigError
from mtl_runner.weighting import StepContext, fairgrad
from mtl_runner.weighting._gram import nan_max
from mtl_runner.weighting.aligned_mtl import AlignedMTL, balance_transformation
from mtl_runner.weighting.excess_mtl import ExcessMTL
from mtl_runner.weighting.fairgrad import FairGrad
from mtl_runner.weighting.gradnorm import GradNorm
from mtl_runner.weighting.imtl import IMTL

J_TORCHJD = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
TWO = ("a", "b")
EPS64 = float(torch.finfo(torch.float64).eps)


def tasks(k: int) -> tuple[str, ...]:
    return tuple(f"t{i}" for i in range(k))


def random_jacobian(k: int, width: int = 12, rank: int | None = None, seed: int = 0, shift=0.0):
    generator = torch.Generator().manual_seed(seed)
    if rank is None:
        return torch.randn(k, width, generator=generator, dtype=torch.float64) + shift
    left = torch.randn(k, rank, generator=generator, dtype=torch.float64)
    return left @ torch.randn(rank, width, generator=generator, dtype=torch.float64)


def weights_of(method, jacobian: torch.Tensor, losses: torch.Tensor | None = None):
    k = jacobian.shape[0]
    return method.aggregate(jacobian, torch.ones(k) if losses is None else losses).weights


def linear_step(method, coefficients: torch.Tensor, point: torch.Tensor):
    """One backward of ``method`` on L_k = Σ_j A_kj p_j² / 2 at p (so g_k = A_k ⊙ p); no heads."""
    shared = torch.nn.Parameter(point.clone())
    losses = 0.5 * (coefficients * shared**2).sum(dim=1)
    context = StepContext(
        backward=lambda total: total.backward(),
        shared_parameters=[shared],
        task_parameters={name: [] for name in method.task_names},
        shared_representation=shared,
        draw_batch=lambda: None,
    )
    weights = method.backward(losses, context)
    return weights, shared.grad, losses.detach(), coefficients * point


# ----------------------------------------------------------------------------------- IMTL


def imtl_closed_form(jacobian: torch.Tensor) -> torch.Tensor:
    """The paper's α_{2:K} = g_1 Uᵀ (D Uᵀ)^{-1}, α_1 = 1 − Σ α_{2:K}."""
    units = jacobian / jacobian.norm(dim=1, keepdim=True)
    differences = jacobian[0] - jacobian[1:]
    unit_differences = units[0] - units[1:]
    rest = jacobian[0] @ unit_differences.T @ torch.linalg.inv(differences @ unit_differences.T)
    return torch.cat([1 - rest.sum(dim=0, keepdim=True), rest])


def test_imtl_reproduces_torchjd_regression_values() -> None:
    weights = weights_of(IMTL(TWO), J_TORCHJD)
    torch.testing.assert_close(weights, torch.tensor([0.5923, 0.4077]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_imtl_equals_the_papers_closed_form_on_full_rank_jacobians(k: int) -> None:
    for seed in range(5):
        jacobian = random_jacobian(k, seed=seed) * torch.arange(1, k + 1)[:, None]
        weights = weights_of(IMTL(tasks(k)), jacobian)
        torch.testing.assert_close(weights, imtl_closed_form(jacobian), rtol=1e-9, atol=1e-9)
        # the definition: Σα = 1 and d has the same projection on every unit gradient
        direction = weights @ jacobian
        projections = jacobian @ direction / jacobian.norm(dim=1)
        assert weights.sum().item() == pytest.approx(1.0, abs=1e-12)
        torch.testing.assert_close(projections, projections[:1].expand(k), rtol=1e-9, atol=0)


@pytest.mark.parametrize(("k", "rank"), [(3, None), (5, None), (4, 2), (6, 3)])
def test_imtl_matches_torchjd_also_with_dependent_rows(k: int, rank: int | None) -> None:
    torchjd = pytest.importorskip("torchjd")
    for seed in range(4):
        jacobian = random_jacobian(k, rank=rank, seed=seed)
        expected = torchjd.aggregation.IMTLGWeighting()(jacobian @ jacobian.T)
        torch.testing.assert_close(weights_of(IMTL(tasks(k)), jacobian), expected)


def test_imtl_does_not_depend_on_the_scale_of_the_gradients() -> None:
    jacobian = random_jacobian(3, seed=1)
    reference = weights_of(IMTL(tasks(3)), jacobian)
    for scale in (1e-20, 1e-8, 1e8, 1e20):
        torch.testing.assert_close(weights_of(IMTL(tasks(3)), jacobian * scale), reference)


def test_imtl_degenerate_cases_stay_finite_and_impartial() -> None:
    # g2 = −g1: only d = 0 has equal projections; α = (½, ½) gives it with Σα = 1
    opposite = torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
    torch.testing.assert_close(weights_of(IMTL(TWO), opposite), torch.tensor([0.5, 0.5]))
    # identical gradients: split evenly
    same = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    torch.testing.assert_close(weights_of(IMTL(TWO), same), torch.tensor([0.5, 0.5]))
    # no gradient at all
    torch.testing.assert_close(
        weights_of(IMTL(tasks(3)), torch.zeros(3, 4)), torch.full((3,), 1 / 3)
    )


def test_imtl_loss_scaling_weights_the_scaled_gradients_and_learns_s() -> None:
    method = IMTL(TWO, loss_scaling=True)
    assert method.parameters() == [method.log_scale]
    with torch.no_grad():
        method.log_scale.copy_(torch.tensor([0.5, -0.3]))
    scales = torch.exp(torch.tensor([0.5, -0.3], dtype=torch.float64))
    # c_k = α_k e^{s_k}, α = IMTL-G of the rows e^{s_k} g_k
    jacobian = J_TORCHJD.double()
    alpha = weights_of(IMTL(TWO), scales[:, None] * jacobian)
    torch.testing.assert_close(weights_of(method, jacobian), alpha * scales)

    coefficients = torch.tensor([[2.0, 1.0], [0.5, 3.0]])
    weights, shared_grad, losses, gradients = linear_step(method, coefficients, torch.ones(2))
    torch.testing.assert_close(shared_grad, weights @ gradients)  # d = Σ c_k ∇L_k
    # s gets ∂(e^{s_k} L_k − s_k)/∂s_k = e^{s_k} L_k − 1
    torch.testing.assert_close(method.log_scale.grad, scales.float() * losses - 1.0)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    optimizer.step()
    torch.testing.assert_close(
        method.log_scale.detach(), torch.tensor([0.5, -0.3]) - 0.1 * (scales.float() * losses - 1)
    )
    restored = IMTL(TWO, loss_scaling=True)
    restored.load_state_dict(copy.deepcopy(method.state_dict()))
    torch.testing.assert_close(restored.log_scale, method.log_scale)


def test_imtl_g_alone_has_no_state_and_no_parameters() -> None:
    method = IMTL(TWO)
    assert method.parameters() == [] and method.state_dict() == {}
    weights, shared_grad, _, gradients = linear_step(
        method, torch.tensor([[2.0, 1.0], [0.5, 3.0]]), torch.ones(2)
    )
    assert method.log_scale.grad is None
    torch.testing.assert_close(shared_grad, weights @ gradients)


# ----------------------------------------------------------------------------------- Aligned-MTL


def test_aligned_mtl_reproduces_torchjd_regression_values_in_its_scaling() -> None:
    weights = weights_of(AlignedMTL(TWO, preference="mean"), J_TORCHJD)
    torch.testing.assert_close(weights, torch.tensor([0.5591, 0.4083]), atol=1e-4, rtol=0)
    # the paper's p = 𝟙 is K = 2 times that
    weights = weights_of(AlignedMTL(TWO), J_TORCHJD)
    torch.testing.assert_close(weights, torch.tensor([1.1182, 0.8166]), atol=1e-4, rtol=0)


def test_aligned_mtl_hand_computed_orthogonal_case() -> None:
    # M = diag(9, 16); σ_min = 9; B = 3·diag(1/3, 1/4) = diag(1, 0.75); α = B𝟙 = (1, 0.75);
    # d = (3, 3): both aligned gradients have norm σ_min^{1/2} = 3
    jacobian = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    weights = weights_of(AlignedMTL(TWO), jacobian)
    torch.testing.assert_close(weights, torch.tensor([1.0, 0.75]))
    torch.testing.assert_close(weights @ jacobian, torch.tensor([3.0, 3.0]))
    # rmse: σ = (9 + 16)/2 = 12.5, B = √12.5·diag(1/3, 1/4)
    weights = weights_of(AlignedMTL(TWO, scale_mode="rmse"), jacobian)
    torch.testing.assert_close(weights, math.sqrt(12.5) * torch.tensor([1 / 3, 1 / 4]))


def test_aligned_mtl_balance_makes_the_gradients_orthogonal_with_equal_norms() -> None:
    jacobian = random_jacobian(4, seed=3)
    gram = jacobian @ jacobian.T
    balance = balance_transformation(gram, EPS64, AlignedMTL(tasks(4)).scale_mode)
    smallest = torch.linalg.eigvalsh(gram).min()
    torch.testing.assert_close(balance @ gram @ balance, smallest * torch.eye(4, dtype=gram.dtype))


@pytest.mark.parametrize("mode", ["min", "median", "rmse"])
@pytest.mark.parametrize(("k", "rank"), [(3, None), (5, None), (5, 2)])
def test_aligned_mtl_matches_torchjd(mode: str, k: int, rank: int | None) -> None:
    torchjd = pytest.importorskip("torchjd")
    for seed in range(3):
        jacobian = random_jacobian(k, rank=rank, seed=seed)
        expected = torchjd.aggregation.AlignedMTLWeighting(scale_mode=mode)(jacobian @ jacobian.T)
        method = AlignedMTL(tasks(k), preference="mean", scale_mode=mode)
        torch.testing.assert_close(weights_of(method, jacobian), expected)


def test_aligned_mtl_rank_zero_and_tiny_scales_stay_finite() -> None:
    torch.testing.assert_close(weights_of(AlignedMTL(tasks(3)), torch.zeros(3, 5)), torch.ones(3))
    jacobian = random_jacobian(3, seed=2)
    reference = weights_of(AlignedMTL(tasks(3)), jacobian)
    for scale in (1e-30, 1e-8, 1e8):
        torch.testing.assert_close(weights_of(AlignedMTL(tasks(3)), jacobian * scale), reference)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_imtl_and_aligned_mtl_fall_back_to_finite_weights_when_a_gradient_overflowed(
    value: float,
) -> None:
    # as for J = 0: IMTL-G splits evenly, Aligned-MTL's B is the identity (the trainer's own
    # checks handle the non-finite step); an infinite gradient used to stop LAPACK's eigh
    jacobian = random_jacobian(3, seed=4)
    jacobian[0, 2] = value
    torch.testing.assert_close(
        weights_of(IMTL(tasks(3)), jacobian), torch.full((3,), 1 / 3).double()
    )
    torch.testing.assert_close(weights_of(AlignedMTL(tasks(3)), jacobian), torch.ones(3).double())


# ----------------------------------------------------------------------------------- FairGrad


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_fairgrad_hand_computed_orthogonal_case(alpha: float) -> None:
    # M = diag(4, 16): w_k · ‖g_k‖² = w_k^{−1/α}  ⇒  w_k = ‖g_k‖^{−2α/(α+1)}
    jacobian = torch.tensor([[2.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    expected = torch.tensor([2.0, 4.0], dtype=torch.float64) ** (-2 * alpha / (alpha + 1))
    torch.testing.assert_close(weights_of(FairGrad(TWO, alpha=alpha), jacobian), expected)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_fairgrad_solves_its_equation_at_every_scale(alpha: float, k: int) -> None:
    for seed in range(3):
        jacobian = random_jacobian(k, width=20, seed=seed, shift=0.5)
        unit = weights_of(FairGrad(tasks(k), alpha=alpha), jacobian)
        for scale in (1e-6, 1e-3, 1.0, 1e4):
            scaled = jacobian * scale
            gram = scaled @ scaled.T
            weights = weights_of(FairGrad(tasks(k), alpha=alpha), scaled)
            target = weights ** (-1 / alpha)
            assert ((gram @ weights - target).abs() / target).max() < 1e-9
            # M → s²M gives w → (s²)^{−α/(α+1)} w
            torch.testing.assert_close(
                weights, unit * scale ** (-2 * alpha / (alpha + 1)), rtol=1e-9, atol=0
            )
            # never conflicting: g_kᵀd = w_k^{−1/α} > 0
            assert (scaled @ (weights @ scaled) > 0).all()


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_fairgrad_matches_torchjd_where_a_solution_exists(alpha: float) -> None:
    torchjd = pytest.importorskip("torchjd")
    for seed in range(4):
        jacobian = random_jacobian(3, width=20, seed=seed, shift=0.5)
        expected = torchjd.aggregation.FairGradWeighting(alpha=alpha)(jacobian @ jacobian.T)
        torch.testing.assert_close(
            weights_of(FairGrad(tasks(3), alpha=alpha), jacobian), expected, rtol=1e-5, atol=0
        )


def test_fairgrad_without_a_solution_leaves_the_shared_parameters_and_warns_nothing() -> None:
    # g2 = −g1: 0 = ½g1 + ½g2 is in the convex hull, so M w = 1/w has no positive solution
    opposite = torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aggregation = FairGrad(TWO).aggregate(opposite, torch.ones(2))
    torch.testing.assert_close(aggregation.weights, torch.tensor([0.5, 0.5]))
    assert aggregation.direction is not None and not aggregation.direction.any()
    # three gradients in the plane around 0; and no gradient at all
    ring = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    aggregation = FairGrad(tasks(3)).aggregate(ring, torch.ones(3))
    torch.testing.assert_close(aggregation.weights, torch.full((3,), 1 / 3))
    assert not aggregation.direction.any()
    aggregation = FairGrad(tasks(3)).aggregate(torch.zeros(3, 4), torch.ones(3))
    torch.testing.assert_close(aggregation.weights, torch.full((3,), 1 / 3))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "rows",
    [
        [[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]],  # g₂ = −g₁
        [[1.0, 2.0, 3.0], [-2.0, -4.0, -6.0]],  # g₂ = −2g₁
        [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],  # an opposite pair and a third
    ],
)
def test_fairgrad_opposite_gradients_have_no_solution(rows, dtype, alpha: float) -> None:
    # 0 = ½g₁ + ½g₂ (or ⅔g₁ + ⅓g₂) is in the hull, so M w = w^{−1/α} has no solution; the
    # iterates grow until M̃w cancels exactly and the relative residual looks met (the logged
    # weights were ~1e6–1e9 and scaled the heads): the solver must say "no solution"
    jacobian = torch.tensor(rows, dtype=dtype)
    aggregation = FairGrad([f"t{k}" for k in range(len(rows))], alpha=alpha).aggregate(
        jacobian, torch.ones(len(rows), dtype=dtype)
    )
    weights = aggregation.weights.double()
    assert aggregation.direction is not None and not aggregation.direction.any()
    assert weights.sum().item() == pytest.approx(1.0) and (weights >= 0).all()
    # Σ v_k g_k ≈ 0 as the docstring bounds it: ‖Σ v_k g_k‖² ≤ K·eps·mean_k ‖g_k‖²
    rows64 = jacobian.double()
    bound = len(rows) * torch.finfo(dtype).eps * (rows64**2).sum(1).mean()
    assert ((weights @ rows64) ** 2).sum() <= bound


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_fairgrad_nearly_opposite_gradients_keep_their_large_solution(alpha: float) -> None:
    # g = (±1, 1e-4): 0 is not in the hull (min-norm point (0, 1e-4)), so the solution exists,
    # with w₁ = w₂ large; the stationarity check must not take it away
    jacobian = torch.tensor([[1.0, 1e-4], [-1.0, 1e-4]], dtype=torch.float64)
    aggregation = FairGrad(["a", "b"], alpha=alpha).aggregate(jacobian, torch.ones(2))
    w = aggregation.weights.double()
    assert aggregation.direction is None and w.sum() > 100
    gram = jacobian @ jacobian.T
    torch.testing.assert_close(gram @ w, w ** (-1.0 / alpha), rtol=1e-6, atol=0)


@pytest.mark.parametrize(("k", "steps"), [(3, 1), (10, 2)])
def test_fairgrad_takes_few_steps_on_nearly_orthogonal_gradients(
    monkeypatch, k: int, steps: int
) -> None:
    # separate tasks' gradients: off-diagonal products ~1% of the squared norms (as in the
    # benchmark); from the start (each equation alone, rescaled, one diagonal step) Newton
    # steps, or one Chebyshev step where the residual is ~1e-5, reach 1e-12
    points = []
    evaluate = fairgrad._evaluate
    monkeypatch.setattr(fairgrad, "_evaluate", lambda *args: points.append(1) or evaluate(*args))
    rng = np.random.default_rng(0)
    for _ in range(5):
        rough = rng.uniform(-0.01, 0.01, (k, k))
        gram = np.diag(rng.uniform(0.5, 2.0, k)) + (rough + rough.T) * 0.5
        points.clear()
        weights, solved = fairgrad.solve_fairgrad(gram, 1.0, np.finfo(np.float64).eps)
        assert solved and len(points) <= 1 + steps
        residual = np.abs(gram @ weights - 1 / weights) / (np.abs(gram) @ weights + 1 / weights)
        assert residual.max() <= 1e-12


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_fairgrad_chebyshev_step_is_taken_for_other_alphas(monkeypatch, alpha: float) -> None:
    # a Newton step lands inside the Chebyshev step's reach (residual ~5e-6); for α ≠ 1 its
    # ½p(p+1) must be right for the step to halve the residual and be taken
    taken, points = [], []
    chebyshev, evaluate = fairgrad._chebyshev_step, fairgrad._evaluate
    monkeypatch.setattr(
        fairgrad, "_chebyshev_step", lambda *args: taken.append(chebyshev(*args)) or taken[-1]
    )
    monkeypatch.setattr(fairgrad, "_evaluate", lambda *args: points.append(1) or evaluate(*args))
    gram = np.array([[1.0, 0.05, -0.1], [0.05, 2.0, 0.025], [-0.1, 0.025, 0.5]])
    weights, solved = fairgrad.solve_fairgrad(gram, alpha, np.finfo(np.float64).eps)
    target = weights ** (-1 / alpha)
    residual = np.abs(gram @ weights - target) / (np.abs(gram) @ weights + target)
    assert solved and residual.max() <= 1e-12
    assert taken and all(step is not None for step in taken)
    assert len(points) == 3  # start, Newton (~5e-6), Chebyshev (~1e-16; e² would not do)


def test_fairgrad_one_zero_gradient_puts_zero_in_the_hull() -> None:
    jacobian = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.5, -1.0, 3.0]])
    aggregation = FairGrad(tasks(3)).aggregate(jacobian, torch.ones(3))
    assert aggregation.direction is not None and not aggregation.direction.any()
    assert aggregation.weights.sum().item() == pytest.approx(1.0)
    assert (aggregation.weights @ jacobian).norm() <= 1e-3 * jacobian.norm()


def test_nan_max_keeps_a_nan() -> None:
    # Python's max drops a NaN that is not first; the solver must see it (a non-finite step)
    assert math.isnan(nan_max([1.0, math.nan, 2.0]))
    assert nan_max([1.0, 3.0, 2.0]) == 3.0


def test_fairgrad_gives_a_direction_as_weights_when_solved() -> None:
    aggregation = FairGrad(TWO).aggregate(torch.tensor([[2.0, 0.0], [0.0, 4.0]]), torch.ones(2))
    assert aggregation.direction is None


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("inf")])
def test_fairgrad_rejects_non_positive_alpha(alpha: float) -> None:
    with pytest.raises(ConfigError, match=rf"^weighting.alpha={alpha} is not allowed: .*positive"):
        make_method("fairgrad", alpha=alpha)


# ----------------------------------------------------------------------------------- ExcessMTL


def test_excess_mtl_hand_computed_two_steps() -> None:
    # K = 2, D = 1. Call 1: g = (1, 2), S = (1, 4), E⁰ = (1/√1, 4/√4) = (1, 2): baseline, λ stays.
    # Call 2: g = (1, 1), S = (2, 5), E = (1/√2, 1/√5); E/E⁰ = (0.70711, 0.22361);
    # λ ∝ exp(η·E/E⁰) with η = 1: λ_1 = 1/(1 + exp(−0.48350)) = 0.61857
    method = ExcessMTL(TWO, step_size=1.0)
    first = weights_of(method, torch.tensor([[1.0], [2.0]]))
    torch.testing.assert_close(first, torch.tensor([0.5, 0.5]))
    second = weights_of(method, torch.tensor([[1.0], [1.0]]))
    torch.testing.assert_close(second, torch.tensor([0.61857, 0.38143]), atol=1e-5, rtol=0)
    # the authors' code / LibMTL: the same update, weights summing to K
    method = ExcessMTL(TWO, step_size=1.0, weight_sum="num_tasks")
    torch.testing.assert_close(weights_of(method, torch.tensor([[1.0], [2.0]])), torch.ones(2))
    torch.testing.assert_close(
        weights_of(method, torch.tensor([[1.0], [1.0]])), 2 * second, atol=1e-6, rtol=0
    )


def test_excess_mtl_warm_up_keeps_uniform_weights_and_averages_the_baseline() -> None:
    # warm-up calls: g = (1, 2) then (1, 0): S = (2, 4); E = (1/1 + 1/√2, 4/2 + 0) → mean
    # E⁰ = (0.85355, 1); call 3: g = (1, 1), S = (3, 5), E = (1/√3, 1/√5) = (0.57735, 0.44721)
    method = ExcessMTL(TWO, step_size=1.0, warmup_steps=2)
    for rows in ([[1.0], [2.0]], [[1.0], [0.0]]):
        torch.testing.assert_close(weights_of(method, torch.tensor(rows)), torch.full((2,), 0.5))
    ratio = torch.tensor([0.57735 / 0.85355, 0.44721 / 1.0])
    expected = torch.softmax(ratio, dim=0)
    torch.testing.assert_close(
        weights_of(method, torch.tensor([[1.0], [1.0]])), expected, atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("warmup", [0, 3])
def test_excess_mtl_matches_torchjd_in_its_convention(warmup: int) -> None:
    torchjd = pytest.importorskip("torchjd")
    reference = torchjd.aggregation.ExcessMTLWeighting(robust_step_size=1.0, n_warmup_steps=warmup)
    method = ExcessMTL(
        tasks(3), step_size=1.0, warmup_steps=warmup, update_on_first_step=warmup == 0
    )
    for seed in range(8):
        jacobian = random_jacobian(3, width=30, seed=seed) * (1 + seed)
        torch.testing.assert_close(
            weights_of(method, jacobian), reference(jacobian), rtol=1e-6, atol=0
        )


def test_excess_mtl_state_round_trip_continues_exactly() -> None:
    method = ExcessMTL(tasks(3), step_size=0.5)
    for seed in range(3):
        weights_of(method, random_jacobian(3, seed=seed))
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = ExcessMTL(tasks(3), step_size=0.5)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    jacobian = random_jacobian(3, seed=9)
    torch.testing.assert_close(weights_of(restored, jacobian), weights_of(method, jacobian))


def test_excess_mtl_zero_baseline_saturates_instead_of_overflowing() -> None:
    method = ExcessMTL(TWO, step_size=1.0)
    weights_of(method, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))  # task a's baseline is 0
    weights = weights_of(method, torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights, torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"step_size": 0.0}, r"^weighting.step_size=0.0 is not allowed: it must be a positive"),
        ({"warmup_steps": -1}, r"^weighting.warmup_steps=-1 is not allowed: it must be 0 or more"),
        (
            {"warmup_steps": 2, "update_on_first_step": True},
            r"^weighting.update_on_first_step=True is not allowed: it applies only with",
        ),
        ({"grad_source": "features"}, r"^weighting.grad_source=features is not supported"),
    ],
)
def test_excess_mtl_rejects_bad_options(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_method("excess_mtl", **overrides)


# ----------------------------------------------------------------------------------- GradNorm

# L_1 = 3p_0²/2 and L_2 = p_1²/2 … at p = (1, 1): g_1 = (3, 0), g_2 = (0, 1), norms (3, 1)
GRADNORM_A = torch.tensor([[3.0, 0.0], [0.0, 1.0]])


def test_gradnorm_first_step_balances_the_gradient_norms() -> None:
    # λ = (1, 1): G = (3, 1), Ḡ = 2, r = (1, 1) on the first step ⇒ targets (2, 2);
    # ∂L_grad/∂w_k = sign(G_k − 2)·‖g_k‖ = (3, −1)
    method = GradNorm(TWO)
    weights, shared_grad, _, gradients = linear_step(method, GRADNORM_A, torch.ones(2))
    torch.testing.assert_close(weights, torch.ones(2))
    torch.testing.assert_close(shared_grad, weights @ gradients)  # d = Σ λ_k g_k
    torch.testing.assert_close(method.raw_weights.grad, torch.tensor([3.0, -1.0]))
    # the paper's renormalisation after the update: w = (1 − 0.1·3, 1 + 0.1) = (0.7, 1.1) → ×2/1.8
    torch.optim.SGD(method.parameters(), lr=0.1).step()
    method.after_step(lambda: None)
    torch.testing.assert_close(method.raw_weights.detach(), torch.tensor([0.7, 1.1]) * 2 / 1.8)


def test_gradnorm_returns_the_weights_of_the_step_not_a_view_of_w() -> None:
    # the trainer logs the returned λ after the optimizer has updated w (and renormalised it)
    method = GradNorm(TWO)
    weights, *_ = linear_step(method, GRADNORM_A, torch.ones(2))
    torch.optim.SGD(method.parameters(), lr=0.1).step()
    method.after_step(lambda: None)
    torch.testing.assert_close(weights, torch.ones(2))
    assert not torch.equal(method.raw_weights.detach(), torch.ones(2))


def test_gradnorm_training_rates_move_the_targets() -> None:
    # step 1 at p = (1, 1): L(0) = (1.5, 0.5). Step 2 at p = (1, 1/√2): L = (1.5, 0.25), so
    # L̃ = (1, 0.5), r = (4/3, 2/3); G = (3, 1/√2), Ḡ = 1.85355; targets Ḡ·r^1.5 = (2.8533, 1.0088)
    # ⇒ signs (+, −) and ∂L_grad/∂w = (3, −1/√2)
    method = GradNorm(TWO)
    linear_step(method, GRADNORM_A, torch.ones(2))
    method.raw_weights.grad = None
    linear_step(method, GRADNORM_A, torch.tensor([1.0, 2**-0.5]))
    torch.testing.assert_close(method.raw_weights.grad, torch.tensor([3.0, -(2**-0.5)]))
    # with α = 3 both flip: Ḡ·(4/3)³ = 4.394 > 3 and Ḡ·(2/3)³ = 0.549 < 0.707 ⇒ (−3, 1/√2)
    method = GradNorm(TWO, alpha=3.0)
    linear_step(method, GRADNORM_A, torch.ones(2))
    method.raw_weights.grad = None
    linear_step(method, GRADNORM_A, torch.tensor([1.0, 2**-0.5]))
    torch.testing.assert_close(method.raw_weights.grad, torch.tensor([-3.0, 2**-0.5]))


def test_gradnorm_softmax_parametrisation_chains_through_k_softmax() -> None:
    # λ = 2·softmax(w) = (1, 1) at w = (1, 1); ∂λ/∂w = 2·(diag(p) − ppᵀ) with p = (½, ½), so
    # ∂L_grad/∂w = 2·((½·3, ½·(−1)) − ¼·(3 − 1)·𝟙) = (2, −2)
    method = GradNorm(TWO, parametrisation="softmax")
    linear_step(method, GRADNORM_A, torch.ones(2))
    torch.testing.assert_close(method.raw_weights.grad, torch.tensor([2.0, -2.0]))
    with torch.no_grad():
        method.raw_weights.copy_(torch.tensor([0.0, math.log(3.0)]))
    method.after_step(lambda: None)  # no renormalisation of w in this variant
    torch.testing.assert_close(weights_of(method, GRADNORM_A), torch.tensor([0.5, 1.5]))


@pytest.mark.parametrize("parametrisation", ["direct", "softmax"])
def test_gradnorm_gradient_does_not_depend_on_grad_mode(parametrisation: str) -> None:
    # aggregate may run where grad mode is off (inside another backward)
    methods = [GradNorm(tasks(3), parametrisation=parametrisation) for _ in range(2)]
    for method in methods:
        with torch.no_grad():
            method.raw_weights.copy_(torch.tensor([0.5, 1.0, 1.5]))
    jacobian = random_jacobian(3, seed=2).float()
    for method, grad_mode in zip(methods, (True, False), strict=True):
        with torch.set_grad_enabled(grad_mode):
            weights_of(method, jacobian, torch.tensor([1.0, 2.0, 3.0]))
            weights_of(method, 1.3 * jacobian, torch.tensor([0.9, 1.0, 2.0]))
    assert methods[0]._pending_grad is not None
    torch.testing.assert_close(methods[1]._pending_grad, methods[0]._pending_grad, rtol=0, atol=0)


def test_gradnorm_first_epoch_variant_waits_for_the_epoch_mean() -> None:
    method = GradNorm(TWO, initial_loss="first_epoch")
    weights, *_ = linear_step(method, GRADNORM_A, torch.ones(2))
    torch.testing.assert_close(weights, torch.ones(2))
    assert method.raw_weights.grad is None  # plain equal weighting in the first epoch
    method.on_epoch_end(torch.tensor([3.0, 0.25], dtype=torch.float64))
    linear_step(method, GRADNORM_A, torch.ones(2))
    # L̃ = (1.5/3, 0.5/0.25) = (0.5, 2), r = (0.4, 1.6); targets 2·r^1.5 = (0.506, 4.048) ⇒ (3, −1)
    torch.testing.assert_close(method.raw_weights.grad, torch.tensor([3.0, -1.0]))


def test_gradnorm_state_round_trip_and_parameters() -> None:
    method = GradNorm(tasks(3))
    assert method.parameters() == [method.raw_weights]
    weights_of(method, random_jacobian(3, seed=1), torch.tensor([1.0, 2.0, 3.0]))
    with torch.no_grad():
        method.raw_weights.copy_(torch.tensor([0.5, 1.0, 1.5]))
    method.on_epoch_end(torch.ones(3, dtype=torch.float64))
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = GradNorm(tasks(3))
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for attribute in ("_initial_losses", "_epochs"):
        assert getattr(restored, attribute) == pytest.approx(getattr(method, attribute))
    torch.testing.assert_close(restored.raw_weights, method.raw_weights)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        (
            "gradnorm",
            {"alpha": -1.0},
            r"^weighting.alpha=-1.0 is not allowed: it must be 0 or more",
        ),
        ("aligned_mtl", {"scale_mode": "max"}, r"^weighting.scale_mode='max' is not allowed"),
        (
            "gradnorm",
            {"parametrisation": "exp"},
            r"^weighting.parametrisation='exp' is not allowed",
        ),
    ],
)
def test_bad_options_are_one_line_config_errors(name: str, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        make_method(name, **overrides)
    assert "\n" not in str(error.value)


def test_fairgrad_is_exact_where_least_squares_is_not() -> None:
    # methods.md §5: least_squares' absolute tolerances are 8.7% off at gradient norms ≈ 1e-3;
    # here the equation holds to float64 precision at that scale
    jacobian = random_jacobian(3, width=50, seed=5, shift=0.5) * 1e-3
    weights = weights_of(FairGrad(tasks(3)), jacobian).numpy()
    gram = (jacobian @ jacobian.T).numpy()
    np.testing.assert_allclose(gram @ weights, 1 / weights, rtol=1e-10)
