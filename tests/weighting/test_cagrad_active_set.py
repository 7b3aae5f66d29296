"""CAGrad's active-set solve against its root finder (the two routes to the same optimum).

The active-set route reads the optimum off the KKT conditions of one support; the root finder
follows ‖g_w(r)‖ = r by bisection-guarded steps. On well-conditioned Gram matrices both must give
the same w*, and the active-set route must be the one taken (else the speed is not there).
"""

from __future__ import annotations

import numpy as np
import pytest

from mtl_runner.weighting import cagrad
from mtl_runner.weighting.cagrad import _active_set, _RadiusProblem, _root


def gram_matrices(seed: int, count: int) -> list[np.ndarray]:
    """Seeded Gram matrices (trace 1), K = 2..10: independent gradients and ones sharing a
    common part (then some tasks drop out of the optimum's support)."""
    rng = np.random.default_rng(seed)
    matrices = []
    for i in range(count):
        k = 2 + i % 9
        jacobian = rng.standard_normal((k, k + 5))
        if i % 2:
            jacobian = rng.standard_normal((1, k + 5)) + 0.3 * jacobian
        gram = jacobian @ jacobian.T
        matrices.append(gram / np.trace(gram))
    return matrices


def root_finder(problem: _RadiusProblem) -> tuple[np.ndarray, float]:
    low = 1e-4
    high = float(np.sqrt(problem.gram.diagonal().max()))
    start = problem.inner(low)
    guess = min(max(problem.mean_norm, low), high)
    return _root(problem, low, high, start, guess)


@pytest.mark.parametrize("radius_scale", [0.1, 0.5, 0.9, 2.0])
def test_the_active_set_solve_agrees_with_the_root_finder(radius_scale: float) -> None:
    partial_supports = 0
    for gram in gram_matrices(seed=3, count=90):
        problem = _RadiusProblem(gram, radius_scale)
        assert problem.well_conditioned()
        found = _active_set(problem, float(np.sqrt(gram.diagonal().max())))
        assert found is not None, f"the active set did not settle at K={len(gram)}"
        w, norm = np.array(found[0]), found[1]
        expected_w, expected_norm = root_finder(problem)
        np.testing.assert_allclose(w, expected_w, rtol=0, atol=1e-9)
        assert norm == pytest.approx(expected_norm, rel=1e-9)
        assert w.sum() == pytest.approx(1.0, abs=1e-12) and (w >= 0).all()
        partial_supports += int((w == 0).any())
    assert partial_supports >= 10  # the support search itself was exercised


def test_the_root_finder_takes_over_where_the_gram_matrix_is_ill_conditioned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(0)
    jacobian = rng.standard_normal((4, 6))
    jacobian[3] = jacobian[2]  # a duplicated task: M̃ is singular
    gram = jacobian @ jacobian.T
    calls = []
    monkeypatch.setattr(cagrad, "_active_set", lambda problem, high: calls.append(problem))
    weights = cagrad.cagrad_weights(gram, 0.5)
    assert calls == []  # not even tried: its systems would be inaccurate
    assert np.isfinite(weights).all() and weights[2] + weights[3] > 0


@pytest.mark.parametrize("radius_scale", [0.1, 0.5, 2.0])
def test_the_float_and_numpy_routes_give_the_same_weights(
    monkeypatch: pytest.MonkeyPatch, radius_scale: float
) -> None:
    """Up to _FLOAT_TASKS tasks the K × K work runs on Python floats, beyond it on NumPy: both
    routes, forced for every K here, solve the same systems (to rounding)."""
    matrices = gram_matrices(seed=5, count=45)
    monkeypatch.setattr(cagrad, "_FLOAT_TASKS", 100)  # floats at every K
    on_floats = [cagrad.cagrad_weights(gram, radius_scale) for gram in matrices]
    monkeypatch.setattr(cagrad, "_FLOAT_TASKS", 0)
    on_numpy = [cagrad.cagrad_weights(gram, radius_scale) for gram in matrices]
    for floats, arrays in zip(on_floats, on_numpy):
        np.testing.assert_allclose(floats, arrays, rtol=1e-12, atol=1e-15)
    assert all(np.ptp(w) > 1e-6 for w in on_floats)  # the tasks get different weights
