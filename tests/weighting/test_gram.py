"""The shared Gram matrix (mtl_runner.weighting._gram)."""

from __future__ import annotations

import numpy as np
import torch

from mtl_runner.weighting import _gram


def test_float64_gram_of_float32_gradients_in_blocks(monkeypatch) -> None:
    monkeypatch.setattr(_gram, "_BLOCK_ELEMENTS", 64)  # 21 columns a block for K = 3
    jacobian = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0))
    exact = (jacobian.double() @ jacobian.double().T).numpy()
    # float64 sums in another order: equal to a few ulps of the largest entry
    np.testing.assert_allclose(_gram.gram_matrix(jacobian, exact=True), exact, atol=1e-13 * 1000)


def test_gram_is_symmetric_float64_in_the_jacobians_precision_by_default() -> None:
    jacobian = torch.randn(4, 300)
    gram = _gram.gram_matrix(jacobian)
    assert gram.dtype == np.float64 and gram.shape == (4, 4)
    np.testing.assert_array_equal(gram, gram.T)
    reference = (jacobian @ jacobian.T).double().numpy()
    np.testing.assert_allclose(gram, 0.5 * (reference + reference.T), rtol=0, atol=0)


def test_as_weights_follows_the_jacobians_dtype() -> None:
    like = torch.zeros(2, 5, dtype=torch.float16)
    weights = _gram.as_weights(np.array([0.25, 1 / 3]), like)
    assert weights.dtype == torch.float16
    torch.testing.assert_close(weights, torch.tensor([0.25, 1 / 3], dtype=torch.float16))
