"""The shared Gram matrix (mtl_runner.weighting._gram)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_runner.weighting import _gram


def test_float64_gram_of_float32_gradients_in_blocks(monkeypatch) -> None:
    monkeypatch.setattr(_gram, "_BLOCK_ELEMENTS", 64)  # 21 columns a block for K = 3
    jacobian = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0))
    exact = (jacobian.double() @ jacobian.double().T).numpy()
    # float64 sums in another order: equal to a few ulps of the largest entry
    np.testing.assert_allclose(_gram.gram_matrix(jacobian, exact=True), exact, atol=1e-13 * 1000)


@pytest.mark.parametrize("num_tasks", [1, 3, 4, 5, 10])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_is_symmetric_float64_in_the_jacobians_precision_by_default(
    num_tasks: int, dtype: torch.dtype
) -> None:
    # K ≤ 4: dot products of rows; K > 4: one matmul. Both accumulate in J's dtype
    generator = torch.Generator().manual_seed(num_tasks)
    jacobian = (torch.randn(num_tasks, 3000, generator=generator) * 1e3).to(dtype)
    gram = _gram.gram_matrix(jacobian)
    assert gram.dtype == np.float64 and gram.shape == (num_tasks, num_tasks)
    np.testing.assert_array_equal(gram, gram.T)
    exact = (jacobian.double() @ jacobian.double().T).numpy()
    # a float32 sum of 3000 products: within 3000·eps of Σ|products| ≤ ‖g_i‖‖g_j‖
    norms = np.sqrt(np.diag(exact))
    tolerance = 3000 * torch.finfo(dtype).eps * np.outer(norms, norms)
    assert (np.abs(gram - exact) <= tolerance).all()
    assert not np.array_equal(gram, exact) or dtype == torch.float64  # not secretly float64


def test_matmul_gram_is_the_symmetrised_product() -> None:
    jacobian = torch.randn(6, 300)
    reference = (jacobian @ jacobian.T).double().numpy()
    np.testing.assert_array_equal(_gram.gram_matrix(jacobian), 0.5 * (reference + reference.T))


def test_dot_gram_is_the_row_products_and_large_jacobians_use_the_matmul(monkeypatch) -> None:
    jacobian = torch.randn(3, 500, generator=torch.Generator().manual_seed(1))
    rows = jacobian.numpy()
    expected = [[float(rows[i].dot(rows[j])) for j in range(3)] for i in range(3)]
    np.testing.assert_array_equal(_gram.gram_matrix(jacobian), np.array(expected))
    monkeypatch.setattr(_gram, "_DOT_ELEMENTS", 3 * 500 - 1)  # one entry too many
    reference = (jacobian @ jacobian.T).double().numpy()
    np.testing.assert_array_equal(_gram.gram_matrix(jacobian), 0.5 * (reference + reference.T))


def test_as_weights_follows_the_jacobians_dtype() -> None:
    like = torch.zeros(2, 5, dtype=torch.float16)
    weights = _gram.as_weights(np.array([0.25, 1 / 3]), like)
    assert weights.dtype == torch.float16
    torch.testing.assert_close(weights, torch.tensor([0.25, 1 / 3], dtype=torch.float16))
