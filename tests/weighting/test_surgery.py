"""Gradient surgery: PCGrad, GradVac, GradDrop and ConFIG against hand values and torchjd."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from test_weighting_properties import make_method

from mtl_runner.errors import ConfigError
from mtl_runner.weighting import StepContext, graddrop
from mtl_runner.weighting.config import ConFIG
from mtl_runner.weighting.graddrop import GradDrop
from mtl_runner.weighting.gradvac import GradVac
from mtl_runner.weighting.pcgrad import PCGrad

# torchjd's regression matrix (tests/unit/aggregation/test_values.py)
J_TORCHJD = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
# its Gram matrix: ‖g1‖² = 18, ‖g2‖² = 38, g1·g2 = −24 + 1 + 1 = −22
TWO = ("a", "b")


def tasks(k: int) -> tuple[str, ...]:
    return tuple(f"t{i}" for i in range(k))


def random_jacobian(k: int, width: int = 12, rank: int | None = None, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    if rank is None:
        return torch.randn(k, width, generator=generator, dtype=torch.float64)
    left = torch.randn(k, rank, generator=generator, dtype=torch.float64)
    return left @ torch.randn(rank, width, generator=generator, dtype=torch.float64)


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    return (u @ v / (u.norm() * v.norm())).item()


# ----------------------------------------------------------------------------------- PCGrad


def test_pcgrad_reproduces_torchjd_regression_values() -> None:
    # g1^PC = g1 + 22/38 g2, g2^PC = g2 + 22/18 g1, so c = (1 + 22/18, 1 + 22/38)
    weights = PCGrad(TWO).aggregate(J_TORCHJD, torch.ones(2)).weights
    torch.testing.assert_close(weights, torch.tensor([1 + 22 / 18, 1 + 22 / 38]))
    torch.testing.assert_close(
        weights @ J_TORCHJD, torch.tensor([0.5848, 3.8012, 3.8012]), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("k", [3, 5])
def test_pcgrad_matches_torchjd_with_the_same_draws(k: int, rank: int | None) -> None:
    torchjd = pytest.importorskip("torchjd")
    jacobian = random_jacobian(k, rank=rank, seed=k)
    for seed in range(5):
        torch.manual_seed(seed)
        ours = PCGrad(tasks(k)).aggregate(jacobian, torch.ones(k)).weights
        torch.manual_seed(seed)
        theirs = torchjd.aggregation.PCGradWeighting()(jacobian @ jacobian.T)
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_pcgrad_order_is_random_but_seeded() -> None:
    jacobian = random_jacobian(4, seed=3)
    draws = []
    for seed in range(20):
        torch.manual_seed(seed)
        draws.append(tuple(PCGrad(tasks(4)).aggregate(jacobian, torch.ones(4)).weights.tolist()))
    torch.manual_seed(0)
    assert tuple(PCGrad(tasks(4)).aggregate(jacobian, torch.ones(4)).weights.tolist()) == draws[0]
    assert len(set(draws)) > 1  # the projection order matters for K = 3+


def test_pcgrad_definition_no_conflict_two_tasks_and_scale() -> None:
    aligned = random_jacobian(3, seed=1).abs()  # pairwise inner products > 0: nothing projected
    torch.testing.assert_close(
        PCGrad(tasks(3)).aggregate(aligned, torch.ones(3)).weights, torch.ones(3).double()
    )
    # K = 2 with a conflict: ⟨d, g1⟩ = ‖g1‖²(1 − cos²) ≥ 0, and the same for g2
    jacobian = J_TORCHJD.double()
    direction = PCGrad(TWO).aggregate(jacobian, torch.ones(2)).weights @ jacobian
    rho2 = 22.0**2 / (18 * 38)
    expected = torch.tensor([18.0, 38.0], dtype=torch.float64) * (1 - rho2)
    torch.testing.assert_close(jacobian @ direction, expected)
    for scale in (1e-8, 1e8):  # the weights do not depend on the scale of J
        torch.manual_seed(0)
        scaled = PCGrad(tasks(3)).aggregate(random_jacobian(3, seed=5) * scale, torch.ones(3))
        torch.manual_seed(0)
        plain = PCGrad(tasks(3)).aggregate(random_jacobian(3, seed=5), torch.ones(3))
        torch.testing.assert_close(scaled.weights, plain.weights, rtol=1e-12, atol=1e-12)


def test_pcgrad_never_projects_on_a_zero_gradient() -> None:
    jacobian = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]])
    # only g1 and g3 conflict (−1): g1 += g3/2, g3 += g1/1 → c = (1 + 1, 1, 1 + 1/2)
    weights = PCGrad(tasks(3)).aggregate(jacobian, torch.ones(3)).weights
    torch.testing.assert_close(weights, torch.tensor([2.0, 1.0, 1.5]))


def test_pcgrad_and_gradvac_draw_one_permutation_per_task() -> None:
    """The random stream, which seeded runs rely on: PCGrad draws ``randperm(K)`` and GradVac
    ``randperm(K − 1)``, once per task, and nothing else."""
    jacobian = random_jacobian(4, seed=2)
    for method, size in ((PCGrad(tasks(4)), 4), (GradVac(tasks(4)), 3)):
        torch.manual_seed(0)
        method.aggregate(jacobian, torch.ones(4))
        after = torch.rand(5)
        torch.manual_seed(0)
        for _ in range(4):
            torch.randperm(size)
        torch.testing.assert_close(after, torch.rand(5), rtol=0, atol=0)


# ---------------------------------------------------------------------------------- GradVac


def test_gradvac_first_step_is_pcgrad_and_sets_the_targets() -> None:
    method = GradVac(TWO)  # targets start at 0: only negative cosines are raised, to 0
    weights = method.aggregate(J_TORCHJD, torch.ones(2)).weights
    torch.testing.assert_close(weights, torch.tensor([1 + 22 / 18, 1 + 22 / 38]))
    rho = -22 / math.sqrt(18 * 38)  # cosine before the correction, both ways
    expected = torch.tensor([[0.0, 0.01 * rho], [0.01 * rho, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(method.state_dict()["targets"], expected)


def test_gradvac_raises_the_cosine_to_the_target_and_updates_it_always() -> None:
    method = GradVac(TWO, beta=0.5)
    # step 1: unit gradients with cosine 0.8 > target 0: no correction, target ← 0.4
    first = torch.tensor([[1.0, 0.0], [0.8, 0.6]], dtype=torch.float64)
    torch.testing.assert_close(
        method.aggregate(first, torch.ones(2)).weights, torch.ones(2).double()
    )
    assert method.targets[0, 1].item() == pytest.approx(0.4)
    # step 2: cosine 0.1 < 0.4: g1 += w g2 with
    # w = 1·(0.4·√(1−0.01) − 0.1·√(1−0.16)) / (1·√(1−0.16)) = 0.334248..., the same for g2
    second = torch.tensor([[1.0, 0.0], [0.1, math.sqrt(0.99)]], dtype=torch.float64)
    weights = method.aggregate(second, torch.ones(2)).weights
    step = (0.4 * math.sqrt(0.99) - 0.1 * math.sqrt(0.84)) / math.sqrt(0.84)
    assert step == pytest.approx(0.334248, abs=1e-6)
    torch.testing.assert_close(weights, torch.tensor([1 + step, 1 + step]).double())
    corrected = second[0] + (weights[1] - 1) * second[1]  # g1^PC = g1 + C_12 g2
    assert cosine(corrected, second[1]) == pytest.approx(0.4)  # exactly the target
    # the target is updated with the cosine measured before the correction: 0.5·0.4 + 0.5·0.1
    assert method.targets[0, 1].item() == pytest.approx(0.25)
    assert method.targets[1, 0].item() == pytest.approx(0.25)


def test_gradvac_with_beta_zero_is_pcgrad() -> None:
    method = GradVac(TWO, beta=0.0)
    for seed in range(3):
        jacobian = random_jacobian(2, seed=seed)
        torch.testing.assert_close(
            method.aggregate(jacobian, torch.ones(2)).weights,
            PCGrad(TWO).aggregate(jacobian, torch.ones(2)).weights,
        )


@pytest.mark.parametrize("beta", [0.01, 0.5])
@pytest.mark.parametrize("k", [3, 5])
def test_gradvac_matches_torchjd_over_steps(k: int, beta: float) -> None:
    torchjd = pytest.importorskip("torchjd")
    ours = GradVac(tasks(k), beta=beta)
    theirs = torchjd.aggregation.GradVacWeighting(beta=beta, eps=0.0)
    base = random_jacobian(k, seed=k)
    for seed in range(6):
        jacobian = base + 0.7 * random_jacobian(k, seed=100 + seed)
        torch.manual_seed(seed)
        weights = ours.aggregate(jacobian, torch.ones(k)).weights
        torch.manual_seed(seed)
        expected = theirs(jacobian @ jacobian.T)
        torch.testing.assert_close(weights, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.targets, theirs._phi_t, rtol=1e-9, atol=1e-9)


def test_gradvac_is_scale_free_and_keeps_its_state() -> None:
    plain, scaled = GradVac(tasks(3), beta=0.5), GradVac(tasks(3), beta=0.5)
    for seed in range(3):
        jacobian = random_jacobian(3, seed=seed)
        torch.manual_seed(seed)
        a = plain.aggregate(jacobian, torch.ones(3)).weights
        torch.manual_seed(seed)
        b = scaled.aggregate(jacobian * 1e-8, torch.ones(3)).weights
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    state = copy.deepcopy(plain.state_dict())
    assert state["targets"].shape == (3, 3) and state["targets"].dtype == torch.float64
    restored = make_method("gradvac", 3, beta=0.5)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.targets, plain.targets, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"targets of shape \(3, 3\), expected \(2, 2\)"):
        GradVac(TWO).load_state_dict(state)


@pytest.mark.parametrize("beta", [-0.1, 1.5])
def test_gradvac_rejects_beta_outside_unit_interval(beta: float) -> None:
    with pytest.raises(ConfigError, match=rf"^weighting.beta={beta} is not allowed: .*\[0, 1\]$"):
        make_method("gradvac", 3, beta=beta)


# --------------------------------------------------------------------------------- GradDrop


def test_graddrop_supports_features_only() -> None:
    assert make_method("graddrop").grad_source.value == "features"
    with pytest.raises(ConfigError, match="grad_source=params is not supported by GradDrop"):
        make_method("graddrop", grad_source="params")


def test_graddrop_keeps_agreeing_gradients_untouched() -> None:
    jacobian = torch.tensor([[1.0, -2.0, 0.0, 3.0], [0.5, -1.0, 4.0, 0.0]])
    aggregation = GradDrop(TWO).aggregate(jacobian, torch.ones(2))
    torch.testing.assert_close(aggregation.direction, jacobian.sum(0))
    torch.testing.assert_close(aggregation.weights, torch.ones(2))


def outcomes(method: GradDrop, draws: int, call) -> dict[tuple, int]:
    torch.manual_seed(0)
    counts: dict[tuple, int] = {}
    for _ in range(draws):
        aggregation = call(method)
        key = (tuple(aggregation.direction.tolist()), tuple(aggregation.weights.tolist()))
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_graddrop_per_element_hand_values() -> None:
    # column 0: 2 and −1 → P = ½(1 + 1/3) = 2/3; column 1: 1 and 1 → P = 1, both kept
    jacobian = torch.tensor([[2.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    counts = outcomes(GradDrop(TWO), 3000, lambda m: m.aggregate(jacobian, torch.ones(2)))
    # positive kept: d = (2, 2), c = ((4 + 1)/5, (0 + 1)/2); negative kept: d = (−1, 2),
    # c = ((0 + 1)/5, (1 + 1)/2)
    assert set(counts) == {((2.0, 2.0), (1.0, 0.5)), ((-1.0, 2.0), (0.2, 1.0))}
    assert counts[((2.0, 2.0), (1.0, 0.5))] / 3000 == pytest.approx(2 / 3, abs=0.04)


def test_graddrop_leak() -> None:
    jacobian = torch.tensor([[2.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    # leak 1: nothing is dropped
    aggregation = GradDrop(TWO, leak=1.0).aggregate(jacobian, torch.ones(2))
    torch.testing.assert_close(aggregation.direction, jacobian.sum(0))
    torch.testing.assert_close(aggregation.weights, torch.ones(2).double())
    # leak 0.25 in column 0: positive kept: d_0 = 2 − 0.25·1, c_2 = (0.25·1 + 1)/2;
    # negative kept: d_0 = 0.25·2 − 1, c_1 = (0.25·4 + 1)/5
    counts = outcomes(GradDrop(TWO, leak=0.25), 200, lambda m: m.aggregate(jacobian, torch.ones(2)))
    assert set(counts) == {((1.75, 2.0), (1.0, 0.625)), ((-0.5, 2.0), (0.4, 1.0))}
    with pytest.raises(ConfigError, match=r"^weighting.leak=1.5 is not allowed: .*\[0, 1\]$"):
        make_method("graddrop", leak=1.5)


def test_graddrop_batch_purity_hand_values() -> None:
    # B = 2 samples, one unit, z = (1, −1): S_1 = 2·1 + 1·(−1) = 1, S_2 = −1·1 + 1·(−1) = −2,
    # P = ½(1 + (1 − 2)/(1 + 2)) = 1/3; one mask for the unit, shared by both samples
    jacobian = torch.tensor([[2.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    activations = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    counts = outcomes(
        GradDrop(TWO, purity="batch"), 3000, lambda m: m.drop_batch(jacobian, activations)
    )
    # S_1 > 0 kept: d = ∇_1 = (2, 1), c = (1, 0); S_2 < 0 kept: d = ∇_2 = (−1, 1), c = (0, 1)
    assert set(counts) == {((2.0, 1.0), (1.0, 0.0)), ((-1.0, 1.0), (0.0, 1.0))}
    assert counts[((2.0, 1.0), (1.0, 0.0))] / 3000 == pytest.approx(1 / 3, abs=0.04)
    with pytest.raises(RuntimeError, match="needs the shared representation"):
        GradDrop(TWO, purity="batch").aggregate(jacobian, torch.ones(2))


@pytest.mark.parametrize("leak", [0.0, 0.3])
@pytest.mark.parametrize("k", [3, 5])
def test_graddrop_matches_torchjd_with_the_same_draws(k: int, leak: float) -> None:
    torchjd = pytest.importorskip("torchjd")
    jacobian = random_jacobian(k, width=64, seed=k)
    aggregator = torchjd.aggregation.GradDrop(leak=torch.full((k,), leak, dtype=torch.float64))
    for seed in range(3):
        torch.manual_seed(seed)
        ours = GradDrop(tasks(k), leak=leak).aggregate(jacobian, torch.ones(k)).direction
        torch.manual_seed(seed)
        torch.testing.assert_close(ours, aggregator(jacobian))


@pytest.mark.parametrize("leak", [0.0, 0.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_graddrop_masks_are_the_sign_comparisons_of_the_same_draw(
    dtype: torch.dtype, leak: float
) -> None:
    generator = torch.Generator().manual_seed(0)
    jacobian = torch.randn(4, 300, generator=generator).to(dtype)
    jacobian[:, :20] = 0.0  # Σ|∇| = 0: P = ½
    jacobian[1, 20:60] = 0.0
    jacobian[2, 60:80] = -jacobian[0, 60:80]
    jacobian[3, 299] = math.nan
    torch.manual_seed(3)
    aggregation = GradDrop(tasks(4), leak=leak).aggregate(jacobian, torch.ones(4))
    # the definition, with boolean comparisons and float64 squares, on the same torch.rand draw
    torch.manual_seed(3)
    ratio = jacobian.sum(0) / jacobian.abs().sum(0).clamp_min(torch.finfo(dtype).tiny)
    purity = 0.5 * (1.0 + ratio.clamp(-1.0, 1.0))
    draw = torch.rand(purity.shape, dtype=dtype)
    keep = (purity > draw) & (jacobian > 0) | (purity < draw) & (jacobian < 0)
    masks = leak + (1.0 - leak) * keep.to(dtype)
    torch.testing.assert_close(
        aggregation.direction, (masks * jacobian).sum(0), rtol=0, atol=0, equal_nan=True
    )
    squares = jacobian.double().square()
    expected = torch.where(
        squares.sum(1) > 0, (masks.double() * squares).sum(1) / squares.sum(1), 1.0
    )
    assert aggregation.weights.dtype == dtype and aggregation.weights[3].item() == 1.0  # NaN row
    # float32 sums of float32 squares: within a few roundings of the exact fraction
    rtol = 1e-13 if dtype == torch.float64 else 4 * torch.finfo(torch.float32).eps
    torch.testing.assert_close(aggregation.weights, expected.to(dtype), rtol=rtol, atol=0)


def test_graddrop_batch_purity_through_backward() -> None:
    """backward hands z to the batch form; z receives d and head k gets c_k ∇_head L_k."""
    torch.manual_seed(0)
    trunk, heads = torch.nn.Linear(3, 4), [torch.nn.Linear(4, 1) for _ in TWO]
    x = torch.randn(5, 3)

    def losses_and_z():
        z = torch.tanh(trunk(x))
        outputs = [head(z).squeeze(1) for head in heads]
        return torch.stack([outputs[0].pow(2).mean(), (outputs[1] - 1).abs().mean()]), z

    losses, z = losses_and_z()
    rows = [torch.autograd.grad(losses[k], z, retain_graph=True)[0] for k in range(2)]
    jacobian = torch.stack(rows).flatten(1)
    method = GradDrop(TWO, purity="batch")
    torch.manual_seed(1)
    expected = method.drop_batch(jacobian, z.detach())
    head_grads = [
        expected.weights[k] * torch.autograd.grad(losses[k], heads[k].weight, retain_graph=True)[0]
        for k in range(2)
    ]
    trunk_grad = torch.autograd.grad(z, trunk.weight, expected.direction.view_as(z))[0]

    losses, z = losses_and_z()
    context = StepContext(
        backward=lambda t: t.backward(),
        shared_parameters=list(trunk.parameters()),
        task_parameters={name: list(head.parameters()) for name, head in zip(TWO, heads)},
        shared_representation=z,
        draw_batch=lambda: None,
    )
    torch.manual_seed(1)
    weights = method.backward(losses, context)
    torch.testing.assert_close(weights, expected.weights)
    torch.testing.assert_close(trunk.weight.grad, trunk_grad)
    for head, grad in zip(heads, head_grads):
        torch.testing.assert_close(head.weight.grad, grad)
    assert method._activations is None  # not kept beyond the step


def test_graddrop_trains_with_batch_purity(mtl_run) -> None:
    outcome = mtl_run("weighting=graddrop", "weighting.purity=batch")
    assert outcome.code == 0, outcome.stderr
    assert outcome.metrics.notna().all().all()


# ----------------------------------------------------------------------------------- ConFIG


def test_config_reproduces_the_two_task_closed_form() -> None:
    # K = 2: Ĝ = [[1, ρ], [ρ, 1]] has 1 as an eigenvector, so g_u ∝ u1 + u2 with
    # u1 = (−4, 1, 1)/√18, u2 = (6, 1, 1)/√38; d = ((g1 + g2)·ĝ) ĝ with g1 + g2 = (2, 2, 2):
    # u1 + u2 = (0.030519, 0.397924, 0.397924), ĝ = (0.054153, 0.706069, 0.706069),
    # (g1 + g2)·ĝ = 2.932583, d = (0.158809, 2.070607, 2.070607)
    weights = ConFIG(TWO).aggregate(J_TORCHJD, torch.ones(2)).weights
    direction = weights @ J_TORCHJD
    torch.testing.assert_close(
        direction, torch.tensor([0.158809, 2.070607, 2.070607]), atol=1e-5, rtol=0
    )
    units = J_TORCHJD.double() / J_TORCHJD.double().norm(dim=1, keepdim=True)
    unit = (units[0] + units[1]) / (units[0] + units[1]).norm()
    jacobian = J_TORCHJD.double()
    exact = ConFIG(TWO).aggregate(jacobian, torch.ones(2)).weights @ jacobian
    torch.testing.assert_close(exact, (jacobian.sum(0) @ unit) * unit, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e8])
@pytest.mark.parametrize(("k", "rank"), [(3, None), (5, None), (5, 2), (3, 1)])
def test_config_matches_torchjd(k: int, rank: int | None, scale: float) -> None:
    torchjd = pytest.importorskip("torchjd")
    jacobian = random_jacobian(k, width=20, rank=rank, seed=k) * scale
    weights = ConFIG(tasks(k)).aggregate(jacobian, torch.ones(k)).weights
    expected = torchjd.aggregation.ConFIG()(jacobian)
    torch.testing.assert_close(weights @ jacobian, expected, rtol=1e-8, atol=1e-8 * scale)
    torch.testing.assert_close(  # c is scale free
        weights, ConFIG(tasks(k)).aggregate(jacobian / scale, torch.ones(k)).weights
    )


@pytest.mark.parametrize("k", [2, 3, 5])
def test_config_equal_positive_cosines_on_independent_gradients(k: int) -> None:
    jacobian = random_jacobian(k, width=10, seed=10 + k) * torch.arange(1, k + 1.0)[:, None]
    direction = ConFIG(tasks(k)).aggregate(jacobian, torch.ones(k)).weights @ jacobian
    cosines = torch.tensor([cosine(row, direction) for row in jacobian])
    assert (cosines > 0).all()
    torch.testing.assert_close(cosines, cosines.mean().expand(k), rtol=1e-10, atol=1e-10)
    # length = Σ_k ⟨g_k, unit⟩
    unit = direction / direction.norm()
    assert direction.norm().item() == pytest.approx((jacobian @ unit).sum().item())


def test_config_dependent_gradients_zero_rows_and_zero_direction() -> None:
    g = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    # g, −2g, g/2: U g_u = 1 has no solution (signs +, −, +); the least-squares g_u is
    # Σ_k a_k u_k with a = Ĝ⁺1 = s (Σs)/9, i.e. ĝ/3, so d = (Σ_k g_k·ĝ) ĝ = Σ_k g_k = −g/2,
    # which conflicts with g and g/2
    parallel = torch.stack([g, -2 * g, g / 2])
    weights = ConFIG(tasks(3)).aggregate(parallel, torch.ones(3)).weights
    torch.testing.assert_close(weights @ parallel, -g / 2)
    assert not ConFIG.non_conflicting and ConFIG.permutation_invariant
    # g2 = −g1: g_u = 0, so d = 0 and c = 0
    weights = ConFIG(TWO).aggregate(torch.stack([g, -g]), torch.ones(2)).weights
    torch.testing.assert_close(weights, torch.zeros(2).double())
    # a zero gradient drops out: the others' ConFIG, with c = 0 for it
    others = random_jacobian(2, width=3, seed=4)
    with_zero = torch.stack([others[0], torch.zeros(3, dtype=torch.float64), others[1]])
    weights = ConFIG(tasks(3)).aggregate(with_zero, torch.ones(3)).weights
    assert weights[1].item() == 0.0
    torch.testing.assert_close(
        weights[[0, 2]], ConFIG(TWO).aggregate(others, torch.ones(2)).weights
    )
    torch.testing.assert_close(  # all zero
        ConFIG(TWO).aggregate(torch.zeros(2, 3), torch.ones(2)).weights, torch.zeros(2)
    )


@pytest.mark.parametrize("seed", range(4))
def test_config_rank_cut_follows_the_precision_of_the_gram_products(seed: int) -> None:
    """g and 3g are parallel up to float32 rounding: with the Gram products in float32 the
    noise eigenvalue of the cosine matrix (~1e-7) must count as zero, giving the weights of
    the exactly parallel float64 gradients (a fixed 1e-10 cut kept it for seed 1: c_1 off by
    7e-3)."""
    generator = torch.Generator().manual_seed(seed)
    g, h = torch.randn(2, 8192, generator=generator, dtype=torch.float64)
    exact = torch.stack([g, 3 * g, h])
    expected = ConFIG(["a", "b", "c"]).aggregate(exact, torch.ones(3)).weights
    got = ConFIG(["a", "b", "c"]).aggregate(exact.float(), torch.ones(3)).weights
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("k", [2, 10])
def test_graddrop_direction_is_the_masked_sum_bit_for_bit(k: int) -> None:
    # wide float32 columns with exact ties (P = ½, P = U unlikely but P = 1 and 0 common):
    # d is formed from |M ⊙ ∇| and the column's sign; it must equal Σ_k M_k ⊙ ∇_k exactly
    generator = torch.Generator().manual_seed(k)
    jacobian = torch.randn(k, 4096, generator=generator)
    jacobian[:, :512] = torch.randint(-2, 3, (k, 512), generator=generator).float()
    jacobian[:, 512:600] = 0.0
    torch.manual_seed(1)
    aggregation = GradDrop(tasks(k)).aggregate(jacobian, torch.ones(k))
    torch.manual_seed(1)
    ratio = jacobian.sum(0) / jacobian.abs().sum(0).clamp_min(torch.finfo(torch.float32).tiny)
    purity = 0.5 * (1.0 + ratio.clamp(-1.0, 1.0))
    draw = torch.rand(purity.shape)
    keep = (purity > draw) & (jacobian > 0) | (purity < draw) & (jacobian < 0)
    torch.testing.assert_close(aggregation.direction, (keep * jacobian).sum(0), rtol=0, atol=0)
    squares = jacobian.double().square()
    expected = (keep * squares).sum(1) / squares.sum(1)
    rtol = 4 * torch.finfo(torch.float32).eps  # float32 sums of squares, a few roundings
    torch.testing.assert_close(aggregation.weights, expected.float(), rtol=rtol, atol=0)


@pytest.mark.parametrize("scale", [1e20, 1e-22])
def test_graddrop_weights_leave_float32_for_squares_out_of_its_range(
    scale: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the hand values of test_graddrop_per_element_hand_values, scaled so that the float32
    # squares overflow (4e40) or turn subnormal (4e-44, which float32 holds as 28 × 2^-149):
    # the fractions come from float64 squares, exactly 1, 1/2 or 1/5, 1 as unscaled
    jacobian = torch.tensor([[2.0, 1.0], [-1.0, 1.0]]) * scale
    routes: list[torch.dtype] = []
    row_squares = graddrop._row_squares
    monkeypatch.setattr(
        graddrop, "_row_squares", lambda rows: routes.append(rows.dtype) or row_squares(rows)
    )
    counts = outcomes(GradDrop(TWO), 200, lambda m: m.aggregate(jacobian, torch.ones(2)))
    fifth = torch.tensor(0.2).item()  # 1/5 as float32 holds it
    assert {weights for _, weights in counts} == {(1.0, 0.5), (fifth, 1.0)}
    assert routes[:3] == [torch.float32, torch.float64, torch.float64]
    routes.clear()
    GradDrop(TWO).aggregate(jacobian / scale, torch.ones(2))  # in range: float32 sums only
    assert routes == [torch.float32, torch.float32]
