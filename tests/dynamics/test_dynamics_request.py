"""The quadratic forms of the covariance formula: the block-triangular diagonal equals the full one."""

from __future__ import annotations

import pytest
import torch

import torchntk as tn
from torchntk.dynamics import request
from torchntk.dynamics.request import diagonal_quadratic, quadratic_cov


@pytest.mark.parametrize("m, n", [(1, 1), (7, 5), (30, 1100), (4, 1024)])
def test_diagonal_quadratic_equals_the_full_product(m, n):
    """Sizes below, at and across the 512-block boundary (1100 = 2 x 512 + 76). Both are sums of
    the same N^2 non-negative-on-average terms in different orders: 1e-12 relative is far above
    their float64 rounding (~N eps) and far below any missing or doubled block (O(1/b))."""
    g = torch.Generator().manual_seed(m * 1000 + n)
    left = torch.randn(m, n, generator=g, dtype=torch.float64)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    middle = a @ a.T
    expected = ((left @ middle) * left).sum(-1)
    torch.testing.assert_close(diagonal_quadratic(left, middle), expected, rtol=1e-12, atol=0)


def test_diagonal_quadratic_reads_only_the_upper_blocks(monkeypatch):
    """Garbage below the diagonal blocks does not change the result: the upper blocks suffice."""
    monkeypatch.setattr(request, "QUADRATIC_BLOCK", 4)
    g = torch.Generator().manual_seed(1)
    left = torch.randn(3, 10, generator=g, dtype=torch.float64)
    a = torch.randn(10, 10, generator=g, dtype=torch.float64)
    middle = a @ a.T
    expected = diagonal_quadratic(left, middle)
    spoiled = middle.clone()
    rows, cols = torch.tril_indices(10, 10, -1)
    below = rows // 4 > cols // 4  # strictly below the diagonal blocks
    spoiled[rows[below], cols[below]] = float("nan")
    assert torch.equal(diagonal_quadratic(left, spoiled), expected)


def test_diag_cov_is_the_diagonal_of_the_full_cov():
    g = torch.Generator().manual_seed(2)
    m, n = 6, 700
    left = torch.randn(m, n, generator=g, dtype=torch.float64) / n
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    middle, cross = a @ a.T / n, torch.randn(n, m, generator=g, dtype=torch.float64) / n
    prior = torch.eye(m, dtype=torch.float64) * 10
    full = quadratic_cov(left, middle, cross, prior, "full")
    diag = quadratic_cov(left, middle, cross, prior.diagonal(), "diag")
    torch.testing.assert_close(diag, full.diagonal(), rtol=1e-12, atol=1e-14)


def test_a_prediction_prints_as_a_summary_of_shapes_not_its_arrays():
    spec = tn.mlp(depth=3)
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pred = tn.predict_gradient_flow(spec, x[:20], torch.sin(x[:20, :1]), x[20:], t=[0, 1, float("inf")])
    assert repr(pred) == ("Prediction(t=[0, 1, inf], mean: (3, 10, 1), cov: (3, 10, 10), train_mean: (3, 20, 1), "
                          "train_cov: (3, 20, 20), method='eigh')")
    many = tn.predict_gradient_flow(spec, x[:20], torch.sin(x[:20, :1]), x[20:], t=torch.arange(20.0))
    assert "... (14 more)" in repr(many) and len(repr(many)) < 300
