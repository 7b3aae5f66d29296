"""Work shared within one solve: MGDA's min-norm solve reuses the Cholesky solve of its
conditioning test, and Nash-MTL's Newton iterations on Python floats match NumPy's."""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import lapack

from mtl_runner.weighting import _min_norm
from mtl_runner.weighting.nash_mtl import bargaining_solution


def test_min_norm_weights_factorises_a_full_support_problem_once(monkeypatch) -> None:
    calls = []
    dposv = lapack.dposv

    def counting_dposv(*args, **kwargs):
        calls.append(1)
        return dposv(*args, **kwargs)

    monkeypatch.setattr(_min_norm.lapack, "dposv", counting_dposv)
    gram = np.array([[2.0, 0.5, 0.2], [0.5, 3.0, 0.1], [0.2, 0.1, 4.0]])  # α* > 0: full support
    alpha = _min_norm.min_norm_weights(gram)
    assert len(calls) == 1
    assert (alpha > 0).all() and math.isclose(alpha.sum(), 1.0)
    residual = gram @ alpha - alpha @ gram @ alpha  # KKT: (Mα)_k equal on the support
    assert np.abs(residual).max() < 1e-12


def test_bargaining_solution_balances_every_task() -> None:
    generator = np.random.default_rng(5)
    for num_tasks in range(2, 11):
        jacobian = generator.standard_normal((num_tasks, 4 * num_tasks))
        gram = jacobian @ jacobian.T
        alpha = bargaining_solution((gram + gram.T) / 2, generator.random(num_tasks) + 0.1)
        assert alpha is not None
        assert np.abs(alpha * (gram @ alpha) - 1.0).max() < 1e-9
