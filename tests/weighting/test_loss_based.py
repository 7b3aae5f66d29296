"""Loss-based methods (uw, rlw, gls, imtl_l, stch, famo) against hand values and torchjd.

Every expected number is worked out in a comment from the method's definition; torchjd's
scalarizers are the cross-check where it implements the method. For every method the logged
weight must be the true coefficient ∂L_total/∂L_k, which autograd gives independently.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from test_weighting_properties import make_method

from mtl_runner.errors import ConfigError

LOSS_METHODS = ["uw", "rlw", "gls", "imtl_l", "stch", "famo"]


def combine(method, values, dtype=torch.float64):
    """(total, logged weights, autograd ∂total/∂L) for the losses ``values``."""
    losses = torch.tensor(values, dtype=dtype, requires_grad=True)
    combined = method.combine(losses)
    (gradient,) = torch.autograd.grad(combined.loss, losses)
    return combined.loss.detach(), combined.weights.detach(), gradient


def close(actual, expected, atol=1e-6, rtol=1e-6):
    torch.testing.assert_close(
        torch.as_tensor(actual, dtype=torch.float64),
        torch.as_tensor(expected, dtype=torch.float64),
        atol=atol,
        rtol=rtol,
    )


def weights_only_round_trip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ------------------------------------------------------------------ the meaning of a weight
STCH_VARIANTS = [
    {"log_losses": True},
    {"smoothing": 0.1, "preference": [0.2, 0.3, 0.5], "ideal_point": [0.1, 0.0, 0.3]},
    {"log_losses": True, "multiply_by_num_tasks": True, "preference": [1.0, 1.0, 1.0]},
]


@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e8])
@pytest.mark.parametrize(
    ("name", "overrides"),
    [(n, {}) for n in LOSS_METHODS] + [("stch", v) for v in STCH_VARIANTS],
)
def test_logged_weight_is_the_true_coefficient(name, overrides, scale):
    method = make_method(name, 3, **overrides)
    learned = {"uw": "log_variance", "imtl_l": "log_scale"}
    if name in learned:  # away from the uniform start
        method.load_state_dict({learned[name]: torch.tensor([0.3, -1.2, 2.0])})
    torch.manual_seed(0)
    total, weights, gradient = combine(method, [0.7 * scale, 2.0 * scale, 0.05 * scale])
    assert torch.isfinite(total)
    close(weights, gradient, atol=0, rtol=1e-6)


# ------------------------------------------------------------------ UW
def test_uw_hand_values():
    method = make_method("uw", 2)
    method.load_state_dict({"log_variance": torch.tensor([0.0, math.log(2.0)])})
    losses = torch.tensor([1.0, 4.0], dtype=torch.float64)
    combined = method.combine(losses)
    # c = 1/(2 e^s) = [1/2, 1/4]; L = 1/2 + 4/4 + (0 + ln 2)/2 = 1.5 + 0.3465736
    close(combined.weights, [0.5, 0.25])
    close(combined.loss, 1.5 + math.log(2.0) / 2)
    # ∂L/∂s_k = −L_k/(2e^{s_k}) + 1/2 = [−1/2 + 1/2, −4/4 + 1/2] = [0, −0.5]
    (grad_s,) = torch.autograd.grad(combined.loss, method.parameters())
    close(grad_s, [0.0, -0.5])


def test_uw_initial_log_variance_options():
    close(make_method("uw", 3).combine(torch.ones(3)).weights, [0.5] * 3)  # 1/(2e^0)
    libmtl = make_method("uw", 3, initial_log_variance=-0.5)
    close(libmtl.combine(torch.ones(3)).weights, [0.5 * math.exp(0.5)] * 3, atol=1e-6)  # 0.8244


def test_uw_optimum_of_s_is_log_loss():
    # ∂L/∂s_k = 1/2 − L_k/(2e^{s_k}) vanishes at s_k = log L_k, where c_k = 1/(2 L_k)
    method = make_method("uw", 3)
    losses = torch.tensor([0.5, 2.0, 8.0])
    method.load_state_dict({"log_variance": losses.log()})
    combined = method.combine(losses)
    (grad_s,) = torch.autograd.grad(combined.loss, method.parameters())
    close(grad_s, [0.0, 0.0, 0.0])
    close(combined.weights, 1 / (2 * losses))


def test_uw_matches_torchjd():
    scalarization = pytest.importorskip("torchjd.scalarization")
    log_variance = torch.tensor([0.4, -0.7, 1.1])
    reference = scalarization.UW(3)
    with torch.no_grad():
        reference.log_var.copy_(log_variance)
    method = make_method("uw", 3)
    method.load_state_dict({"log_variance": log_variance})
    losses = torch.tensor([0.3, 1.7, 5.0], requires_grad=True)
    ours = method.combine(losses)
    theirs = reference(losses)
    close(ours.loss, theirs)
    ours_grads = torch.autograd.grad(ours.loss, [losses, *method.parameters()])
    theirs_grads = torch.autograd.grad(theirs, [losses, reference.log_var])
    for a, b in zip(ours_grads, theirs_grads):
        close(a, b)
    close(ours.weights, ours_grads[0])


def test_uw_parameter_is_exposed_and_restored_in_place():
    method = make_method("uw", 3)
    (parameter,) = method.parameters()
    assert parameter.requires_grad
    state = weights_only_round_trip({"w": method.state_dict()})["w"]
    state["log_variance"] = torch.tensor([1.0, 2.0, 3.0])
    method.load_state_dict(state)
    assert method.parameters()[0] is parameter  # the trainer's optimizer keeps this object
    close(parameter.detach(), [1.0, 2.0, 3.0])


# ------------------------------------------------------------------ IMTL-L
def test_imtl_l_hand_values():
    method = make_method("imtl_l", 2)
    method.load_state_dict({"log_scale": torch.tensor([0.0, math.log(3.0)])})
    combined = method.combine(torch.tensor([2.0, 1.0], dtype=torch.float64))
    # L = e^0·2 − 0 + e^{ln 3}·1 − ln 3 = 5 − ln 3 = 3.9013877; c = e^s = [1, 3]
    close(combined.loss, 5.0 - math.log(3.0))
    close(combined.weights, [1.0, 3.0])
    # ∂L/∂s_k = e^{s_k} L_k − 1 = [2 − 1, 3 − 1]
    (grad_s,) = torch.autograd.grad(combined.loss, method.parameters())
    close(grad_s, [1.0, 2.0])


def test_imtl_l_is_twice_uw_at_negated_parameter():
    s = torch.tensor([0.2, -0.9, 1.4])
    losses = torch.tensor([0.6, 2.5, 0.1])
    imtl = make_method("imtl_l", 3)
    imtl.load_state_dict({"log_scale": s})
    uw = make_method("uw", 3)
    uw.load_state_dict({"log_variance": -s})
    close(imtl.combine(losses).loss, 2 * uw.combine(losses).loss)
    close(imtl.combine(losses).weights, 2 * uw.combine(losses).weights)


def test_imtl_l_matches_torchjd():
    scalarization = pytest.importorskip("torchjd.scalarization")
    s = torch.tensor([0.5, -0.3])
    reference = scalarization.IMTLL(2)
    with torch.no_grad():
        reference.log_scale.copy_(s)
    method = make_method("imtl_l", 2)
    method.load_state_dict({"log_scale": s})
    losses = torch.tensor([1.3, 0.2], requires_grad=True)
    ours, theirs = method.combine(losses), reference(losses)
    close(ours.loss, theirs)
    close(torch.autograd.grad(ours.loss, losses)[0], torch.autograd.grad(theirs, losses)[0])


@pytest.mark.parametrize(
    ("name", "key"), [("uw", "initial_log_variance"), ("imtl_l", "initial_log_scale")]
)
def test_learned_scale_options_must_be_finite(name, key):
    with pytest.raises(ConfigError, match=rf"^weighting\.{key}=inf is not allowed: .*finite"):
        make_method(name, 2, **{key: float("inf")})


# ------------------------------------------------------------------ RLW
def test_rlw_is_softmax_of_a_fresh_standard_normal_draw():
    method = make_method("rlw", 4)
    torch.manual_seed(3)
    first = method.combine(torch.ones(4)).weights
    second = method.combine(torch.ones(4)).weights
    torch.manual_seed(3)
    expected_first = torch.softmax(torch.randn(4), dim=0)
    expected_second = torch.softmax(torch.randn(4), dim=0)
    close(first, expected_first)
    close(second, expected_second)
    assert not torch.allclose(first, second)  # redrawn every step
    for weights in (first, second):
        assert (weights > 0).all()
        close(weights.sum(), 1.0)


def test_rlw_matches_torchjd():
    scalarization = pytest.importorskip("torchjd.scalarization")
    losses = torch.tensor([0.4, 2.0, 1.1])
    torch.manual_seed(11)
    ours = make_method("rlw", 3).combine(losses).loss
    torch.manual_seed(11)
    theirs = scalarization.Random()(losses)
    close(ours, theirs)


def test_rlw_is_random_and_stateless():
    method = make_method("rlw", 3)
    assert type(method).permutation_invariant is False
    assert method.state_dict() == {} and method.parameters() == []


# ------------------------------------------------------------------ GLS
def test_gls_hand_values():
    total, weights, _ = combine(make_method("gls", 3), [1.0, 4.0, 16.0])
    # (1·4·16)^{1/3} = 64^{1/3} = 4; c_k = 4 / (3 L_k) = [4/3, 1/3, 1/12]
    close(total, 4.0)
    close(weights, [4 / 3, 1 / 3, 1 / 12])
    # LibMTL would log L_k / (K Π L) = [1/192, 4/192, 16/192]: not the coefficient
    assert not torch.allclose(weights, torch.tensor([1, 4, 16], dtype=torch.float64) / 192)


@pytest.mark.parametrize("scale", [1e-8, 1e8])
def test_gls_many_tasks_at_extreme_scales(scale):
    # Π of ten losses of 1e8 is 1e80 (overflows float32), of 1e-8 is 1e-80 (underflows);
    # the geometric mean is the scale itself and every c_k = scale / (10 · scale) = 0.1
    total, weights, gradient = combine(make_method("gls", 10), [scale] * 10, dtype=torch.float32)
    close(total, scale, rtol=1e-5, atol=0)
    close(weights, [0.1] * 10, rtol=1e-5, atol=0)
    close(gradient, weights, rtol=1e-5, atol=0)


def test_gls_clamps_zero_losses():
    total, weights, gradient = combine(make_method("gls", 2), [0.0, 4.0])
    # clamped to eps = 1e-12: total = sqrt(1e-12 · 4) = 2e-6; the clamp cuts task 0's gradient,
    # so c = [0, 2e-6 / (2 · 4)] = [0, 2.5e-7]
    close(total, 2e-6, atol=0, rtol=1e-9)
    close(weights, [0.0, 2.5e-7], atol=0, rtol=1e-9)
    close(gradient, weights, atol=0, rtol=1e-9)


def test_gls_matches_torchjd():
    scalarization = pytest.importorskip("torchjd.scalarization")
    losses = torch.tensor([0.3, 1.9, 0.75, 4.0], requires_grad=True)
    ours, theirs = make_method("gls", 4).combine(losses), scalarization.GeometricMean()(losses)
    close(ours.loss, theirs)
    close(ours.weights, torch.autograd.grad(theirs, losses)[0])


def test_gls_eps_must_be_positive():
    with pytest.raises(
        ConfigError, match=r"^weighting\.eps=0\.0 is not allowed: it must be positive$"
    ):
        make_method("gls", 2, eps=0.0)


# ------------------------------------------------------------------ STCH
def test_stch_paper_form_hand_values():
    total, weights, _ = combine(make_method("stch", 2), [1.0, 3.0])
    # λ = [1/2, 1/2], μ = 1, z* = 0: y = λL/μ = [0.5, 1.5];
    # L = log(e^0.5 + e^1.5) = 1.5 + log(1 + e^−1) = 1.8132617
    # c = λ · softmax(y) = 0.5 · [1/(1+e), e/(1+e)] = [0.1344707, 0.3655293]
    close(total, 1.5 + math.log1p(math.exp(-1.0)))
    close(weights, [0.5 / (1 + math.e), 0.5 * math.e / (1 + math.e)])


def test_stch_small_smoothing_approaches_the_weighted_max():
    total, weights, _ = combine(make_method("stch", 3, smoothing=1e-3), [3.0, 1.0, 2.0])
    # max_k λ_k L_k = 3/3 = 1, all of the weight λ_1 = 1/3 on task 0
    close(total, 1.0, atol=1e-6)
    close(weights, [1 / 3, 0.0, 0.0], atol=1e-6)


def test_stch_matches_torchjd():
    scalarization = pytest.importorskip("torchjd.scalarization")
    preference, ideal = [0.2, 0.3, 0.5], [0.1, 0.0, 0.3]
    method = make_method("stch", 3, smoothing=0.5, preference=preference, ideal_point=ideal)
    reference = scalarization.STCH(
        0.5, weights=torch.tensor(preference), reference=torch.tensor(ideal)
    )
    losses = torch.tensor([0.9, 2.4, 1.2], requires_grad=True)
    ours, theirs = method.combine(losses), reference(losses)
    close(ours.loss, theirs)
    close(ours.weights, torch.autograd.grad(theirs, losses)[0])


def test_stch_large_losses_and_small_smoothing_stay_finite():
    total, weights, gradient = combine(
        make_method("stch", 3, smoothing=0.01), [1e8, 3e8, 2e8], dtype=torch.float32
    )
    # the smooth max is the max: 3e8 / 3 = 1e8, weight λ = 1/3 on task 1
    close(total, 1e8, rtol=1e-6, atol=0)
    close(weights, [0.0, 1 / 3, 0.0])
    close(gradient, weights)


LIBMTL_STCH = {
    "log_losses": True,
    "normalize_by_nadir": True,
    "warmup_epochs": 2,
    "preference": [1.0, 1.0, 1.0],
    "multiply_by_num_tasks": True,
}


def test_stch_libmtl_variant_warmup_then_nadir():
    method = make_method("stch", 3, **LIBMTL_STCH)
    losses = [1.0, 2.0, 4.0]
    # warm-up: L = Σ log L_k = log 8, c_k = 1/L_k
    total, weights, _ = combine(method, losses)
    close(total, math.log(8.0))
    close(weights, [1.0, 0.5, 0.25])
    method.on_epoch_end(torch.tensor([9.0, 9.0, 9.0], dtype=torch.float64))  # epoch 1: no nadir
    close(combine(method, losses)[1], [1.0, 0.5, 0.25])  # still warming up
    method.on_epoch_end(torch.tensor([2.0, 4.0, 8.0], dtype=torch.float64))  # epoch 2 → nadir n
    # after: L = K μ log Σ exp(log(L_k/n_k)/μ) = 3·log Σ L_k/n_k (μ = 1) = 3·log(1.5) = 1.2163953
    # c_k = 3 · softmax(log(L/n))_k / L_k = 3 / (n_k · Σ_j L_j/n_j) = 3/(1.5·[2, 4, 8])
    total, weights, gradient = combine(method, losses)
    close(total, 3 * math.log(1.5))
    close(weights, [1.0, 0.5, 0.25])
    close(gradient, weights)
    method.on_epoch_end(torch.tensor([100.0, 100.0, 100.0], dtype=torch.float64))
    close(method.state_dict()["nadir"], [2.0, 4.0, 8.0])  # fixed once warm-up ends


def test_stch_state_round_trip_keeps_the_nadir():
    method = make_method("stch", 3, **LIBMTL_STCH)
    for means in ([3.0, 3.0, 3.0], [2.0, 4.0, 8.0]):
        method.on_epoch_end(torch.tensor(means, dtype=torch.float64))
    restored = make_method("stch", 3, **LIBMTL_STCH)
    restored.load_state_dict(weights_only_round_trip(method.state_dict()))
    assert restored.state_dict()["epochs_completed"] == 2
    close(combine(restored, [1.0, 3.0, 0.5])[1], combine(method, [1.0, 3.0, 0.5])[1])


def test_stch_plain_warmup_is_the_sum():
    method = make_method("stch", 2, warmup_epochs=1)
    total, weights, _ = combine(method, [0.5, 3.0])
    close(total, 3.5)
    close(weights, [1.0, 1.0])
    method.on_epoch_end(torch.tensor([1.0, 1.0], dtype=torch.float64))
    close(combine(method, [1.0, 3.0])[1], [0.5 / (1 + math.e), 0.5 * math.e / (1 + math.e)])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"smoothing": 0.0}, r"^weighting\.smoothing=0\.0 is not allowed: it must be positive$"),
        (
            {"preference": [1.0, 2.0]},
            r"^weighting\.preference=\[1\.0, 2\.0\] is not allowed: give one",
        ),
        ({"preference": [1.0, -1.0, 1.0]}, r"^weighting\.preference=.* non-negative"),
        ({"ideal_point": [0.0]}, r"^weighting\.ideal_point=\[0\.0\] is not allowed: give one"),
        ({"warmup_epochs": -1}, r"^weighting\.warmup_epochs=-1 is not allowed"),
        (
            {"normalize_by_nadir": True},
            r"^weighting\.normalize_by_nadir=True is not allowed: it needs warmup_epochs >= 1",
        ),
    ],
)
def test_stch_option_validation(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_method("stch", 3, **overrides)


# ------------------------------------------------------------------ FAMO
def test_famo_first_step_is_inverse_loss_weighting():
    total, weights, gradient = combine(make_method("famo", 2), [1.0, 3.0])
    # ξ = 0 → z = [1/2, 1/2]; c = 1/2·(1/1 + 1/3) = 2/3; c_k = z_k/(c L_k) = [3/4, 1/4]
    # L = Σ z log L / c = (1/2 · log 3)/(2/3) = 0.75 · log 3 (ε = 1e-8 moves it by ~1e-8)
    close(weights, [0.75, 0.25])
    close(total, 0.75 * math.log(3.0))
    close(gradient, weights)
    close(weights.sum(), 1.0)


def test_famo_logit_update_by_hand():
    method = make_method("famo", 2)
    method.combine(torch.tensor([1.0, 3.0]))
    method.after_step(lambda: torch.tensor([0.5, 2.7]))
    # δ = log(before) − log(after) = [log 2, log(3/2.7)] = [0.6931472, 0.1053605]
    # ξ.grad = z⊙δ − z(zᵀδ) with z = 1/2: ±(0.6931472 − 0.1053605)/4 = ±0.1469467
    # Adam's first step moves each logit by lr·g/|g| (bias-corrected m̂/√v̂ = sign g): ξ = ∓0.025
    close(method.logits, [-0.025, 0.025], atol=1e-7)
    # the task that improved less (task 1) gains weight: z = softmax(ξ), c_k = z_k/(c L_k)
    z0 = 1 / (1 + math.exp(0.05))
    z1 = 1 - z0
    c = z0 / 1.0 + z1 / 3.0
    close(method.combine(torch.tensor([1.0, 3.0])).weights, [z0 / c, z1 / (3 * c)], atol=1e-6)


def test_famo_matches_torchjd_over_several_steps():
    scalarization = pytest.importorskip("torchjd.scalarization")
    generator = torch.Generator().manual_seed(0)
    method = make_method("famo", 3, min_losses=[0.0, 0.1, 0.0])
    reference = scalarization.FAMO(3, min_losses=torch.tensor([0.0, 0.1, 0.0]))
    for _ in range(6):
        before = torch.rand(3, generator=generator) + 0.2
        after = before * (0.5 + torch.rand(3, generator=generator))
        ours_losses = before.clone().requires_grad_()
        theirs_losses = before.clone().requires_grad_()
        ours, theirs = method.combine(ours_losses), reference(theirs_losses)
        close(ours.loss, theirs, atol=1e-6)
        close(ours.weights, torch.autograd.grad(theirs, theirs_losses)[0], atol=1e-6)
        method.after_step(lambda a=after: a)
        reference.update(after)
        close(method.logits, reference._w.detach(), atol=1e-6)


def test_famo_logits_are_not_model_parameters_and_state_is_tensors():
    method = make_method("famo", 3)
    assert method.parameters() == []
    method.combine(torch.tensor([1.0, 2.0, 3.0]))
    method.after_step(lambda: torch.tensor([0.9, 1.0, 2.9]))
    state = method.state_dict()
    assert state["steps"] == 1
    assert all(isinstance(v, (torch.Tensor, int)) for v in state.values())
    restored = make_method("famo", 3)
    restored.load_state_dict(weights_only_round_trip(state))
    for m in (method, restored):  # both take the same next step
        m.combine(torch.tensor([0.8, 1.0, 2.5]))
        m.after_step(lambda: torch.tensor([0.7, 0.95, 2.4]))
    close(restored.logits, method.logits, atol=0, rtol=0)
    close(restored.state_dict()["exp_avg_sq"], method.state_dict()["exp_avg_sq"], atol=0, rtol=0)


def test_famo_after_step_without_a_step_is_a_no_op():
    method = make_method("famo", 2)
    method.after_step(lambda: pytest.fail("no losses before the step: nothing to compare"))
    method.combine(torch.tensor([1.0, 2.0]))
    method.after_step(lambda: torch.tensor([0.5, 1.0]))
    method.after_step(lambda: pytest.fail("the step's losses were already used"))
    assert method.state_dict()["steps"] == 1


def test_famo_loss_below_its_minimum_is_finite_with_zero_weight():
    method = make_method("famo", 2, min_losses=[0.5, 0.0])
    total, weights, gradient = combine(method, [0.2, 2.0])
    # D = [max(0.2 − 0.5, 0) + ε, 2.0 + ε] = [1e-8, 2]; c = 0.5/1e-8 + 0.5/2 = 5e7 + 0.25;
    # task 0 is clamped (coefficient 0), task 1 gets 0.5/(c·2): the clamped task dominates c
    close(total, 0.5 * (math.log(1e-8) + math.log(2.0)) / (5e7 + 0.25))
    close(weights, [0.0, 0.5 / ((5e7 + 0.25) * 2.0)], atol=0, rtol=1e-6)
    close(gradient, weights, atol=0, rtol=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"logit_lr": 0.0}, r"^weighting\.logit_lr=0\.0 is not allowed: it must be positive$"),
        ({"logit_weight_decay": -1.0}, r"^weighting\.logit_weight_decay=-1\.0 is not allowed"),
        ({"eps": 0.0}, r"^weighting\.eps=0\.0 is not allowed: it must be positive$"),
        (
            {"min_losses": [0.0]},
            r"^weighting\.min_losses=\[0\.0\] is not allowed: give one number per task",
        ),
    ],
)
def test_famo_option_validation(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_method("famo", 2, **overrides)


# ------------------------------------------------------------------ in the trainer
@pytest.mark.parametrize("name", ["rlw", "gls", "stch", "famo"])
def test_state_follows_the_losses_device(name):
    method = make_method(name, 3)
    combined = method.combine(torch.ones(3, device="meta"))  # shapes only, any device would do
    assert combined.weights.device.type == "meta" and combined.loss.device.type == "meta"
    if name == "famo":
        assert method.logits.device.type == "meta"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", LOSS_METHODS)
def test_cuda_state_and_learned_scales_follow_in_place(name):
    """Learned scales move in place: the trainer's optimizer, built before, holds the objects."""
    method = make_method(name, 3)
    before = method.parameters()
    losses = torch.tensor([0.5, 1.0, 2.0], device="cuda", requires_grad=True)
    combined = method.combine(losses)
    combined.loss.backward()
    assert combined.weights.device.type == "cuda"
    close(combined.weights.cpu(), losses.grad.cpu())
    assert all(a is b and a.device.type == "cuda" for a, b in zip(method.parameters(), before))
    method.after_step(lambda: losses.detach() * 0.9)
    state = weights_only_round_trip(method.state_dict())
    assert all(torch.as_tensor(v).device.type == "cpu" for v in state.values())


def test_uw_learns_and_famo_logs_weights_summing_to_one(mtl_run):
    uw = mtl_run("weighting=uw", "trainer.epochs=2")
    assert uw.code == 0, uw.stderr
    weights = uw.metrics.filter(like="weight/")
    assert (weights.iloc[-1] != 0.5).all()  # s moved with the model's optimizer
    saved = torch.load(uw.run_dir / "checkpoints" / "last.pt", weights_only=True)
    log_variance = saved["weighting"]["log_variance"]
    assert log_variance.shape == (3,) and (log_variance != 0).all()
    famo = mtl_run("weighting=famo", "trainer.epochs=2")
    assert famo.code == 0, famo.stderr
    sums = famo.metrics.filter(like="weight/").sum(axis=1).to_numpy().copy()
    close(sums, [1.0, 1.0], atol=1e-5)
    saved = torch.load(famo.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["weighting"]["steps"] == famo.metrics["step"].iloc[-1]
    assert saved["weighting"]["logits"].abs().sum() > 0
