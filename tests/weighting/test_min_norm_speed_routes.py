"""The shortcuts of the min-norm solvers (the trace bound of well_conditioned, the one-by-one
route on Python floats with closed-form 1×1 and 2×2 solves) agree with the plain routes."""

from __future__ import annotations

import numpy as np
import pytest

from mtl_runner.weighting import _min_norm


def random_grams(count: int, seed: int) -> list[np.ndarray]:
    generator = np.random.default_rng(seed)
    grams = []
    for index in range(count):
        num_tasks = 2 + index % 9
        jacobian = generator.standard_normal((num_tasks, 3 * num_tasks))
        jacobian[: num_tasks // 2] *= 10.0 ** generator.uniform(-3, 3)  # spread the conditioning
        gram = jacobian @ jacobian.T
        grams.append((gram + gram.T) / 2)
    return grams


def test_well_conditioned_is_the_eigenvalue_ratio() -> None:
    """The Cholesky trace bound only decides what the eigenvalues would decide."""
    generator = np.random.default_rng(3)
    for index in range(400):
        num_tasks = 2 + index % 9
        vectors = np.linalg.qr(generator.standard_normal((num_tasks, num_tasks)))[0]
        ratio = 10.0 ** generator.uniform(-8, -4)  # around the 1e-6 threshold
        eigenvalues = np.geomspace(ratio, 1.0, num_tasks)
        matrix = (vectors * eigenvalues) @ vectors.T
        matrix = (matrix + matrix.T) / 2
        exact = np.linalg.eigvalsh(matrix)
        expected = exact[0] > 1e-6 * exact[-1]
        if abs(np.log10(exact[0] / exact[-1]) + 6) > 1e-6:  # not on the threshold itself
            assert _min_norm.well_conditioned(matrix) == expected


@pytest.mark.parametrize("few", [0, 100])
def test_one_by_one_and_all_at_once_give_the_same_projections(monkeypatch, few: int) -> None:
    """UPGrad's K projections solved one by one on Python floats (closed forms for supports of
    1 and 2) or all at once by NumPy: the same weights to rounding."""
    grams = random_grams(90, seed=4)
    monkeypatch.setattr(_min_norm, "_FEW_PROBLEMS", few)
    for gram in grams:
        num_tasks = len(gram)
        scaled = gram / gram.trace()
        lowers = np.diag(np.linspace(0.5, 1.5, num_tasks))
        projected = _min_norm.dual_cone_projection(scaled, lowers)
        monkeypatch.setattr(_min_norm, "_FEW_PROBLEMS", 100 - few)
        other = _min_norm.dual_cone_projection(scaled, lowers)
        monkeypatch.setattr(_min_norm, "_FEW_PROBLEMS", few)
        np.testing.assert_allclose(projected, other, rtol=1e-9, atol=1e-12)
        # the KKT conditions of min vᵀMv s.t. v ≥ u, checked directly: feasible, dual feasible
        assert (projected >= lowers - 1e-12).all()
        assert (projected @ scaled >= -1e-9).all()
