"""The min-norm family: MGDA, UPGrad, DualProj, CAGrad, Nash-MTL.

Reference values are published (torchjd's regression matrix J = [[-4, 1, 1], [6, 1, 1]]) or worked
out by hand in the comments; the solvers are checked by the optimality (KKT) conditions of the
problem each method defines, and against torchjd where it implements the method.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from test_weighting_properties import make_method

from mtl_runner.errors import ConfigError
from mtl_runner.weighting.cagrad import cagrad_weights
from mtl_runner.weighting.nash_mtl import _largest_gap, bargaining_solution

# torchjd's regression matrix. Its Gram matrix is M = [[18, -22], [-22, 38]].
J_REF = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
M_REF = np.array([[18.0, -22.0], [-22.0, 38.0]])
ONES2 = torch.ones(2, dtype=torch.float64)


def weights_of(name: str, jacobian: torch.Tensor, losses: torch.Tensor | None = None, **options):
    method = make_method(name, jacobian.shape[0], **options)
    if losses is None:
        losses = torch.ones(jacobian.shape[0], dtype=jacobian.dtype)
    return method.aggregate(jacobian, losses)


def random_jacobians(count: int, seed: int = 0, rank_deficient: bool = True):
    """Seeded float64 Jacobians, K = 2..8, with full-rank, rank-deficient and scaled cases."""
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(count):
        k = 2 + i % 7
        width = int(torch.randint(k, 3 * k + 2, (1,), generator=generator))
        jacobian = torch.randn(k, width, generator=generator, dtype=torch.float64)
        if rank_deficient and i % 3 == 2:
            rank = max(1, k // 2)
            jacobian = torch.randn(k, rank, generator=generator, dtype=torch.float64) @ torch.randn(
                rank, width, generator=generator, dtype=torch.float64
            )
        cases.append(jacobian * 10.0 ** float(torch.randint(-6, 7, (1,), generator=generator)))
    return cases


def gram(jacobian: torch.Tensor) -> np.ndarray:
    return (jacobian @ jacobian.T).numpy()


def direction(jacobian: torch.Tensor, aggregation) -> torch.Tensor:
    if aggregation.direction is not None:
        return aggregation.direction
    return aggregation.weights @ jacobian


# ---------------------------------------------------------------------------------------- MGDA


def test_mgda_regression_value() -> None:
    # two tasks: α₁ = (M₂₂ − M₁₂)/(M₁₁ + M₂₂ − 2M₁₂) = (38 + 22)/(18 + 38 + 44) = 0.6
    weights = weights_of("mgda", J_REF).weights
    torch.testing.assert_close(weights, torch.tensor([0.6, 0.4], dtype=torch.float64))


def test_mgda_orthogonal_gradients_by_hand() -> None:
    # g_k = s_k e_k: min Σ α_k² s_k² on the simplex gives α_k ∝ 1/s_k²;
    # s = (1, 2, 3) → α = (36, 9, 4)/49
    jacobian = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    weights = weights_of("mgda", jacobian).weights
    torch.testing.assert_close(weights, torch.tensor([36.0, 9.0, 4.0], dtype=torch.float64) / 49)


@pytest.mark.parametrize("jacobian", random_jacobians(60), ids=lambda j: f"K{j.shape[0]}")
def test_mgda_weights_satisfy_the_kkt_conditions(jacobian: torch.Tensor) -> None:
    """α ∈ Δ and (Mα)_k ≥ αᵀMα for all k, with equality where α_k > 0 (exact, to 1e-10)."""
    alpha = weights_of("mgda", jacobian).weights.numpy()
    m = gram(jacobian)
    scale = m.diagonal().max()
    value, products = alpha @ m @ alpha, m @ alpha
    assert alpha.min() >= 0 and abs(alpha.sum() - 1) < 1e-12
    assert (products - value).min() >= -1e-10 * scale
    assert np.abs(alpha * (products - value)).max() <= 1e-10 * scale


RHO = 22 / np.sqrt(18 * 38)
ALPHA_LOSS_PLUS = (1 + RHO / 2) / (1.25 + RHO)


@pytest.mark.parametrize(
    ("normalization", "losses", "expected"),
    [
        # l2: equal norms after normalising, so α = (1/2, 1/2); c_k = α_k/‖g_k‖
        ("l2", [2.0, 1.0], [0.5 / np.sqrt(18), 0.5 / np.sqrt(38)]),
        # loss: ĝ = (g₁/2, g₂): M̂ = [[4.5, -11], [-11, 38]],
        # α₁ = (38 + 11)/(4.5 + 38 + 22) = 49/64.5
        ("loss", [2.0, 1.0], [49 / 64.5 / 2, (1 - 49 / 64.5) / 1]),
        # loss+: n = L·‖g‖: ‖ĝ‖ = (1/2, 1), ⟨ĝ₁, ĝ₂⟩ = −ρ/2 with ρ = 22/√(18·38), so
        # M̂ = [[1/4, −ρ/2], [−ρ/2, 1]] and α₁ = (1 + ρ/2)/(1/4 + 1 + ρ); c_k = α_k/(L_k‖g_k‖)
        (
            "loss+",
            [2.0, 1.0],
            [ALPHA_LOSS_PLUS / (2 * np.sqrt(18)), (1 - ALPHA_LOSS_PLUS) / np.sqrt(38)],
        ),
    ],
)
def test_mgda_normalizations_by_hand(normalization, losses, expected) -> None:
    losses = torch.tensor(losses, dtype=torch.float64)
    weights = weights_of("mgda", J_REF, losses, normalization=normalization).weights
    torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float64))
    raw = weights_of("mgda", J_REF, losses, normalization=normalization, update="raw").weights
    n = {
        "l2": [np.sqrt(18), np.sqrt(38)],
        "loss": [2.0, 1.0],
        "loss+": [2 * np.sqrt(18), np.sqrt(38)],
    }
    torch.testing.assert_close(
        raw,
        torch.tensor(expected, dtype=torch.float64)
        * torch.tensor(n[normalization], dtype=torch.float64),
    )


@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
def test_mgda_normalized_direction_does_not_conflict(normalization: str) -> None:
    """d = Σ α_k ĝ_k is the min-norm point of the hull of the ĝ_k: ⟨ĝ_k, d⟩ ≥ ‖d‖²."""
    for jacobian in random_jacobians(20, seed=1):
        losses = torch.rand(jacobian.shape[0], dtype=torch.float64) + 0.1
        aggregation = weights_of("mgda", jacobian, losses, normalization=normalization)
        d = direction(jacobian, aggregation)
        norms = jacobian.norm(dim=1)
        n = {"none": 1.0, "l2": norms, "loss": losses, "loss+": losses * norms}[normalization]
        products = (jacobian @ d) / n  # ⟨ĝ_k, d⟩
        scale = (norms / n).max() ** 2  # max_k ‖ĝ_k‖²
        assert (products >= d.dot(d) - 1e-9 * scale).all()


def test_mgda_frank_wolfe_reproduces_torchjd() -> None:
    torchjd = pytest.importorskip("torchjd")
    for jacobian in random_jacobians(20, seed=2):
        expected = torchjd.aggregation.MGDAWeighting()(jacobian @ jacobian.T)
        weights = weights_of("mgda", jacobian, solver="frank_wolfe").weights
        torch.testing.assert_close(weights, expected, rtol=1e-9, atol=1e-9)


def test_mgda_exact_matches_torchjd_for_two_tasks() -> None:
    """For K = 2 torchjd's first Frank-Wolfe step is the exact line search; K ≥ 3 it is not."""
    torchjd = pytest.importorskip("torchjd")
    for jacobian in random_jacobians(14, seed=3, rank_deficient=False):
        jacobian = jacobian[:2]
        expected = torchjd.aggregation.MGDAWeighting()(jacobian @ jacobian.T)
        torch.testing.assert_close(weights_of("mgda", jacobian).weights, expected)


def test_mgda_bad_normalization_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"weighting.normalization='l1' is not allowed"):
        make_method("mgda", 2, normalization="l1")


# --------------------------------------------------------------------- zero direction, common


@pytest.mark.parametrize("name", ["mgda", "upgrad", "dualproj"])
def test_pareto_stationary_point_gives_exactly_zero_direction(name: str) -> None:
    """Rank 1, gradients of both signs: 0 is in the hull, the update is exactly 0 (in float32)."""
    jacobian = torch.tensor([[1.0], [-2.0], [0.5]]) @ torch.randn(1, 30)
    aggregation = weights_of(name, jacobian)
    assert aggregation.direction is not None and not aggregation.direction.any()
    assert torch.isfinite(aggregation.weights).all()


@pytest.mark.parametrize("name", ["mgda", "upgrad", "dualproj", "cagrad"])
def test_float32_gradients_near_pareto_stationarity_use_a_float64_gram(name: str) -> None:
    """Near a Pareto-stationary point float32 rounding of M (≈1e-7) would decide the weights;
    they are then computed from a float64 Gram of the same float32 numbers."""
    generator = torch.Generator().manual_seed(13)
    rank_one = torch.tensor([[1.0], [-2.0], [0.5]]) @ torch.randn(1, 4000, generator=generator)
    jacobian = rank_one + 1e-4 * torch.randn(3, 4000, generator=generator)
    weights = weights_of(name, jacobian).weights
    expected = weights_of(name, jacobian.double()).weights
    torch.testing.assert_close(weights.double(), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    "bypass",
    [("well_conditioned", lambda matrix: False), ("_SWEEPS", 1)],
    ids=["ill-conditioned", "support-not-settled"],
)
def test_the_nnls_route_agrees_with_the_active_set_method(monkeypatch, bypass) -> None:
    """Where the active-set method cannot vouch for its result (an ill-conditioned Q, or a
    support still changing after its sweeps) SciPy's nnls solves the same problem: forced here
    on inputs the active-set method solves, both give the same weights."""
    from mtl_runner.weighting import _min_norm

    names = ["mgda", "upgrad", "dualproj", "cagrad"]
    cases = random_jacobians(28, seed=14)
    expected = {name: [weights_of(name, j).weights for j in cases] for name in names}
    monkeypatch.setattr(_min_norm, *bypass)
    for name in names:
        for jacobian, weights in zip(cases, expected[name]):
            torch.testing.assert_close(
                weights_of(name, jacobian).weights, weights, rtol=1e-9, atol=1e-12
            )


def test_the_active_set_method_is_the_default_route(monkeypatch) -> None:
    """Well-conditioned Gram matrices never reach nnls (the regression values still hold)."""
    from mtl_runner.weighting import _min_norm

    def unused(*args, **kwargs):
        raise AssertionError("nnls was called")

    monkeypatch.setattr(_min_norm, "_nnls", unused)
    torch.testing.assert_close(
        weights_of("mgda", J_REF).weights, torch.tensor([0.6, 0.4], dtype=torch.float64)
    )
    torch.testing.assert_close(
        weights_of("upgrad", J_REF).weights, torch.tensor([10 / 9, 15 / 19], dtype=torch.float64)
    )
    torch.testing.assert_close(
        weights_of("dualproj", J_REF).weights, torch.tensor([11 / 18, 0.5], dtype=torch.float64)
    )
    for jacobian in random_jacobians(14, seed=15, rank_deficient=False):
        for name in ["mgda", "upgrad", "dualproj", "cagrad"]:
            weights_of(name, jacobian / jacobian.norm())


def test_the_nnls_route_falls_back_to_bounded_least_squares(monkeypatch) -> None:
    from mtl_runner.weighting import _min_norm

    def give_up(*args, **kwargs):
        raise RuntimeError("Maximum number of iterations reached.")

    monkeypatch.setattr(_min_norm, "well_conditioned", lambda matrix: False)
    monkeypatch.setattr(_min_norm, "nnls", give_up)
    torch.testing.assert_close(
        weights_of("mgda", J_REF).weights, torch.tensor([0.6, 0.4], dtype=torch.float64)
    )
    torch.testing.assert_close(
        weights_of("upgrad", J_REF).weights, torch.tensor([10 / 9, 15 / 19], dtype=torch.float64)
    )


def test_duplicated_or_zero_gradients_are_not_well_conditioned() -> None:
    from mtl_runner.weighting._min_norm import well_conditioned

    m = gram(torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0], [1.0, 2.0, 0.0]]).double())
    assert not well_conditioned(m / m.diagonal().max() + 1.0)  # the min-norm problem's Q
    assert not well_conditioned(np.diag([1.0, 0.0]))
    assert well_conditioned(M_REF / 38 + 1.0) and well_conditioned(M_REF)


@pytest.mark.parametrize("name", ["mgda", "upgrad", "dualproj", "cagrad", "nash_mtl"])
def test_weights_do_not_depend_on_the_gradients_scale(name: str) -> None:
    """No absolute epsilons: J and 1e-8·J give the same weights (Nash-MTL: α/1e-8)."""
    for jacobian in random_jacobians(7, seed=4, rank_deficient=False):
        jacobian = jacobian / jacobian.norm()
        k = jacobian.shape[0]
        options = {"max_norm": 0.0} if name == "nash_mtl" else {}
        unit = weights_of(name, jacobian, torch.ones(k, dtype=torch.float64), **options).weights
        tiny = weights_of(name, jacobian * 1e-8, torch.ones(k, dtype=torch.float64), **options)
        factor = 1e-8 if name == "nash_mtl" else 1.0
        torch.testing.assert_close(tiny.weights * factor, unit, rtol=1e-8, atol=1e-12)


# -------------------------------------------------------------------------- UPGrad, DualProj

TORCHJD_EPS = {"norm_eps": 1e-4, "reg_eps": 1e-4}


def test_upgrad_regression_values_in_torchjds_convention() -> None:
    aggregation = weights_of("upgrad", J_REF, **TORCHJD_EPS)
    torch.testing.assert_close(
        aggregation.weights, torch.tensor([1.1109, 0.7894], dtype=torch.float64), atol=1e-4, rtol=0
    )
    expected_direction = torch.tensor([0.2929, 1.9004, 1.9004], dtype=torch.float64)
    torch.testing.assert_close(direction(J_REF, aggregation), expected_direction, atol=1e-4, rtol=0)


def test_upgrad_exact_by_hand() -> None:
    # u₁ = e₁/2: v₁ = 1/2 held, v₂ free: min 18/4 − 22v₂ + 38v₂² → v₂ = 11/38;
    # (Mv)₁ = 9 − 242/38 ≥ 0.
    # u₂ = e₂/2: v₂ = 1/2 held, v₁ = 11/18. Sum: (1/2 + 11/18, 11/38 + 1/2) = (10/9, 15/19).
    weights = weights_of("upgrad", J_REF).weights
    torch.testing.assert_close(weights, torch.tensor([10 / 9, 15 / 19], dtype=torch.float64))


def test_upgrad_with_unit_preference_is_pcgrad_for_two_tasks() -> None:
    # PCGrad: ⟨g₁, g₂⟩ = −22 < 0, g₁' = g₁ + (22/38)g₂, g₂' = g₂ + (22/18)g₁, d = g₁' + g₂'
    # = (40/18) g₁ + (60/38) g₂ = [0.5848, 3.8012, 3.8012] (torchjd's published PCGrad value).
    aggregation = weights_of("upgrad", J_REF, preference=[1.0, 1.0])
    torch.testing.assert_close(
        aggregation.weights, torch.tensor([40 / 18, 60 / 38], dtype=torch.float64)
    )
    published = torch.tensor([0.5848, 3.8012, 3.8012], dtype=torch.float64)
    torch.testing.assert_close(direction(J_REF, aggregation), published, atol=1e-4, rtol=0)


def test_dualproj_exact_by_hand() -> None:
    # u = (1/2, 1/2): Mu = (−2, 8) conflicts with g₁. Hold v₂ = 1/2, v₁ = 11/18 ≥ 1/2,
    # (Mv)₂ = −242/18 + 19 ≥ 0. torchjd's ridge gives 0.6109 instead of 0.6111.
    weights = weights_of("dualproj", J_REF).weights
    torch.testing.assert_close(weights, torch.tensor([11 / 18, 0.5], dtype=torch.float64))
    weights = weights_of("dualproj", J_REF, **TORCHJD_EPS).weights
    torch.testing.assert_close(
        weights, torch.tensor([0.6109, 0.5], dtype=torch.float64), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_dual_cone_methods_match_torchjd(name: str) -> None:
    pytest.importorskip("qpsolvers")  # torchjd's quadprog projector goes through qpsolvers
    aggregation = pytest.importorskip("torchjd.aggregation")
    reference = {"upgrad": aggregation.UPGradWeighting, "dualproj": aggregation.DualProjWeighting}
    for i, jacobian in enumerate(random_jacobians(21, seed=5)):
        jacobian = jacobian / jacobian.norm()  # torchjd's norm_eps is absolute
        k = jacobian.shape[0]
        preference = [] if i % 2 else [0.5 + j for j in range(k)]
        pref_vector = torch.tensor(preference, dtype=torch.float64) if preference else None
        expected = reference[name](pref_vector=pref_vector)(jacobian @ jacobian.T)
        weights = weights_of(name, jacobian, preference=preference, **TORCHJD_EPS).weights
        torch.testing.assert_close(weights, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_dual_cone_methods_do_not_conflict_and_satisfy_kkt(name: str) -> None:
    """Each projection v of u: v ≥ u, Mv ≥ 0, and (v − u)_k (Mv)_k = 0 (exact, reg_eps = 0)."""
    for jacobian in random_jacobians(30, seed=6):
        k = jacobian.shape[0]
        aggregation = weights_of(name, jacobian)
        m = gram(jacobian)
        scale = np.trace(m)
        products = m @ aggregation.weights.numpy()
        assert products.min() >= -1e-10 * scale
        if name == "dualproj":
            v = aggregation.weights.numpy()
            assert (v >= 1 / k - 1e-15).all()
            assert np.abs((v - 1 / k) * products).max() <= 1e-10 * scale


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_norm_eps_returns_the_preference_below_it(name: str) -> None:
    jacobian = J_REF * 1e-3  # ‖J‖_F² = 5.6e-5 < 1e-4
    weights = weights_of(name, jacobian, norm_eps=1e-4).weights
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
@pytest.mark.parametrize(
    ("preference", "message"),
    [
        ([1.0], r"weighting.preference=\[1.0\] is not allowed: give 2 non-negative numbers"),
        ([1.0, -1.0], r"weighting.preference=\[1.0, -1.0\] is not allowed"),
        ([0.0, 0.0], r"weighting.preference=\[0.0, 0.0\] is not allowed: at least one"),
    ],
)
def test_bad_preference_is_one_line(name: str, preference, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_method(name, 2, preference=preference)


@pytest.mark.parametrize("key", ["norm_eps", "reg_eps"])
def test_negative_eps_is_one_line(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"weighting.{key}=-1.0 is not allowed: it must be"):
        make_method("upgrad", 2, **{key: -1.0})


# ---------------------------------------------------------------------------------------- CAGrad


def test_cagrad_regression_value_in_torchjds_convention() -> None:
    weights = weights_of("cagrad", J_REF, rescale="none").weights
    expected = torch.tensor([0.7041, 0.5], dtype=torch.float64)
    torch.testing.assert_close(weights, expected, atol=1e-4, rtol=0)
    # the default divides by 1 + c² = 1.25
    torch.testing.assert_close(weights_of("cagrad", J_REF).weights, weights / 1.25)
    torch.testing.assert_close(weights_of("cagrad", J_REF, rescale="linear").weights, weights / 1.5)


@pytest.mark.parametrize("c", [0.1, 0.5, 0.9, 1.0, 2.0])
def test_cagrad_direction_solves_the_primal_problem(c: float) -> None:
    """Strong duality: d = g₀ + λ g_w lies on the ball ‖d − g₀‖ = c‖g₀‖ and its worst task
    improvement min_k ⟨g_k, d⟩ equals the dual value ⟨g_w, g₀⟩ + c‖g₀‖‖g_w‖ at w*, so d is optimal.
    """
    for jacobian in random_jacobians(28, seed=7):
        k = jacobian.shape[0]
        weights = weights_of("cagrad", jacobian, radius_scale=c, rescale="none").weights
        if not weights.any():
            continue  # the optimum sits at g_w ≈ 0 (checked below)
        lam = weights.sum() - 1  # weights = 1/K + λ w* with Σ w* = 1
        w = (weights - 1 / k) / lam
        assert w.min() >= -1e-12
        g0 = jacobian.mean(dim=0)
        d = weights @ jacobian
        g_w = w @ jacobian
        scale = jacobian.norm()
        assert abs((d - g0).norm() - c * g0.norm()) <= 1e-9 * scale
        dual = g_w @ g0 + c * g0.norm() * g_w.norm()
        assert abs((jacobian @ d).min() - dual) <= 1e-9 * scale**2


def test_cagrad_weights_match_torchjd() -> None:
    pytest.importorskip("cvxpy")
    pytest.importorskip("clarabel")
    aggregation = pytest.importorskip("torchjd.aggregation")
    for jacobian in random_jacobians(14, seed=8, rank_deficient=False):
        jacobian = jacobian / jacobian.norm()
        expected = aggregation.CAGradWeighting(c=0.5)(jacobian @ jacobian.T)
        weights = weights_of("cagrad", jacobian, rescale="none").weights
        torch.testing.assert_close(weights, expected, atol=2e-4, rtol=0)


def test_cagrad_can_conflict_below_radius_one() -> None:
    # g₁ = (1, 0), g₂ = (−0.9, 0.1): g₀ = (0.05, 0.05), c‖g₀‖ = 0.5·0.0707 = 0.0354, and every d
    # in the ball has ⟨g₂, d⟩ ≤ ⟨g₂, g₀⟩ + ‖g₂‖·0.0354 = −0.04 + 0.9055·0.0354 = −0.008 < 0.
    jacobian = torch.tensor([[1.0, 0.0], [-0.9, 0.1]], dtype=torch.float64)
    d = weights_of("cagrad", jacobian).weights @ jacobian
    assert (jacobian @ d).min() < 0
    assert not type(make_method("cagrad")).non_conflicting


@pytest.mark.parametrize("c", [1.0, 2.0])
def test_cagrad_does_not_conflict_from_radius_one(c: float) -> None:
    """With c ≥ 1 the ball contains d = 0, so the optimum has min_k ⟨g_k, d⟩ ≥ 0."""
    for jacobian in random_jacobians(40, seed=9):
        d = direction(jacobian, weights_of("cagrad", jacobian, radius_scale=c))
        assert (jacobian @ d).min() >= -1e-10 * jacobian.norm() ** 2


def test_cagrad_special_cases() -> None:
    # c = 0: the mean gradient, weights 1/K
    weights = weights_of("cagrad", J_REF, radius_scale=0.0).weights
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    # g₀ = 0 (opposite gradients): λ = 0, weights 1/K / (1 + c²)
    opposite = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=torch.float64)
    weights = weights_of("cagrad", opposite).weights
    torch.testing.assert_close(weights, torch.tensor([0.4, 0.4], dtype=torch.float64))
    # g₁ = v, g₂ = −v, g₃ = u ⊥ v: F(w) = ⟨g_w, g₀⟩ + c‖g₀‖‖g_w‖ ≥ 0 = F(½, ½, 0), the optimum has
    # g_w = 0 → weights 0 and an exactly zero update (torchjd's convention)
    stationary = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    aggregation = weights_of("cagrad", stationary)
    assert not aggregation.weights.any() and not aggregation.direction.any()


def test_cagrad_inner_solution_is_exact_at_tiny_scale() -> None:
    """LibMTL's 1e-8 offsets move the weights when M ≈ 1e-8; the solve here does not."""
    jacobian = torch.tensor([[1.0, 0.2, 0.0], [-0.5, 1.0, 0.3], [0.1, -0.4, 1.0]])
    m = gram(jacobian.double())
    torch.testing.assert_close(
        torch.from_numpy(cagrad_weights(m * 1e-8, 0.5)), torch.from_numpy(cagrad_weights(m, 0.5))
    )


def test_cagrad_bad_radius_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"weighting.radius_scale=-0.5 is not allowed"):
        make_method("cagrad", 2, radius_scale=-0.5)


# -------------------------------------------------------------------------------------- Nash-MTL


@pytest.mark.parametrize("jacobian", random_jacobians(20, seed=10, rank_deficient=False))
def test_nash_solution_satisfies_the_bargaining_condition(jacobian: torch.Tensor) -> None:
    """α > 0 and α_k (Mα)_k = 1 for every k (no clipping)."""
    alpha = weights_of("nash_mtl", jacobian, max_norm=0.0).weights.numpy()
    assert (alpha > 0).all()
    np.testing.assert_allclose(alpha * (gram(jacobian) @ alpha), 1.0, rtol=0, atol=1e-8)
    # hence ⟨g_k, d⟩ = (Mα)_k = 1/α_k > 0: the solved direction never conflicts


def test_nash_orthogonal_gradients_by_hand() -> None:
    # M = diag(s²): α_k s_k² α_k = 1 → α_k = 1/s_k; s = (1, 2, 4) → α = (1, 1/2, 1/4).
    # ‖Σ α_k g_k‖² = Σ α_k (Mα)_k = K = 3 > 1, so max_norm = 1 divides α by √3.
    jacobian = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    alpha = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    torch.testing.assert_close(weights_of("nash_mtl", jacobian, max_norm=0.0).weights, alpha)
    clipped = weights_of("nash_mtl", jacobian).weights
    torch.testing.assert_close(clipped, alpha / np.sqrt(3))
    assert abs((clipped @ jacobian).norm() - 1.0) < 1e-12
    # a bound above √3 does not clip
    torch.testing.assert_close(weights_of("nash_mtl", jacobian, max_norm=2.0).weights, alpha)


def test_nash_without_a_solution_reuses_the_previous_weights() -> None:
    method = make_method("nash_mtl", 3, max_norm=0.0)
    losses = torch.ones(3, dtype=torch.float64)
    # rank 1 with both signs: 0 is in the hull, α_k (Mα)_k = 1 has no solution
    stationary = torch.tensor([[1.0], [-2.0], [0.5]]) @ torch.ones(1, 4)
    stationary = stationary.double()
    torch.testing.assert_close(method.aggregate(stationary, losses).weights, torch.ones(3).double())
    jacobian = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    solved = method.aggregate(jacobian, losses).weights
    torch.testing.assert_close(method.aggregate(stationary, losses).weights, solved)


def test_nash_update_weights_every() -> None:
    method = make_method("nash_mtl", 3, max_norm=0.0, update_weights_every=2)
    losses = torch.ones(3, dtype=torch.float64)
    first = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    second = torch.diag(torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64))
    expected_first = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    torch.testing.assert_close(method.aggregate(first, losses).weights, expected_first)
    torch.testing.assert_close(method.aggregate(second, losses).weights, expected_first)  # reused
    torch.testing.assert_close(
        method.aggregate(second, losses).weights, torch.full((3,), 0.5).double()
    )


def test_nash_state_survives_a_weights_only_checkpoint() -> None:
    method = make_method("nash_mtl", 3, update_weights_every=3)
    losses = torch.ones(3, dtype=torch.float64)
    for jacobian in random_jacobians(4, seed=11, rank_deficient=False):
        method.aggregate(
            jacobian[:1].repeat(3, 1) + torch.eye(3, jacobian.shape[1]).double(), losses
        )
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = make_method("nash_mtl", 3, update_weights_every=3)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    jacobian = torch.randn(3, 6, dtype=torch.float64)
    for _ in range(3):  # the reuse phase and the next solve agree
        torch.testing.assert_close(
            restored.aggregate(jacobian, losses).weights, method.aggregate(jacobian, losses).weights
        )


def test_nash_matches_torchjds_sequential_convex_program() -> None:
    """Where torchjd's SCP (the official solver) reaches the bargaining solution, both agree."""
    pytest.importorskip("cvxpy")
    pytest.importorskip("ecos")
    nash = pytest.importorskip("torchjd.aggregation._nash_mtl")
    compared = 0
    for jacobian in random_jacobians(8, seed=12, rank_deficient=False):
        jacobian = jacobian / jacobian.norm()  # the SCP starts from α = 1 in absolute units
        k = jacobian.shape[0]
        reference = nash._NashMTLWeighting(k, max_norm=0.0, update_weights_every=1, optim_niter=20)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cvxpy: "not DPP"
            expected = reference(jacobian).double()
        residual = (expected * (jacobian @ jacobian.T @ expected) - 1).abs().max()
        if residual > 1e-6:
            continue  # the SCP stopped early (it does at K = 7 here); ours still solves it
        weights = weights_of("nash_mtl", jacobian, max_norm=0.0).weights
        torch.testing.assert_close(weights, expected, rtol=1e-6, atol=0)
        compared += 1
    assert compared >= 6


def test_bargaining_residual_keeps_a_nan() -> None:
    # Python's max drops a NaN that is not first; Newton must not take it for converged
    assert np.isnan(_largest_gap(np.array([1.0, np.nan, 1.0])))
    assert _largest_gap(np.array([1.0, 0.5, 1.25])) == 0.5


def test_bargaining_solution_handles_rank_deficient_gram_matrices() -> None:
    # rank 1, same signs: a solution exists, α_k = 1/(a_k ‖v‖ √K)
    a = np.array([1.0, 2.0, 4.0])
    v = np.array([3.0, 4.0])  # ‖v‖ = 5
    jacobian = np.outer(a, v)
    alpha = bargaining_solution(jacobian @ jacobian.T, np.ones(3))
    np.testing.assert_allclose(alpha, 1 / (a * 5 * np.sqrt(3)), rtol=1e-10)
    # a zero gradient: (Mα)_k = 0, no solution
    assert bargaining_solution(np.diag([1.0, 0.0]), np.ones(2)) is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"update_weights_every": 0}, r"weighting.update_weights_every=0 is not allowed"),
        ({"max_norm": -1.0}, r"weighting.max_norm=-1.0 is not allowed: it must be a number >= 0"),
    ],
)
def test_nash_bad_options_are_one_line(options, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_method("nash_mtl", 2, **options)
