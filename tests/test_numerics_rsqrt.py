"""safe_rsqrt: 1 / sqrt(x) for x > 0 and 0 elsewhere, the same values and derivatives on its
plain path (nothing to differentiate) and on the differentiable one.

The two paths compute the same IEEE operations (a square root, then a reciprocal), so the
values agree exactly; derivatives are compared with autograd's closed form at 1e-12 relative,
the round-off of a few float64 operations on O(1) values.
"""

from __future__ import annotations

import torch
from torch.func import jvp

from torchntk.numerics import safe_reciprocal, safe_rsqrt, safe_sqrt

X = torch.tensor([0.0, -1.0, 1e-300, 0.25, 1.0, 7.5, float("nan")], dtype=torch.float64)


def test_values_equal_the_composition_on_the_plain_path():
    expected = safe_reciprocal(safe_sqrt(X))
    got = safe_rsqrt(X)
    assert torch.equal(got, expected)
    assert got[0] == 0 and got[1] == 0 and got[-1] == 0    # no variance, below zero, undefined: no direction


def test_does_not_overwrite_its_argument():
    x = X.clone()
    safe_rsqrt(x)
    assert torch.equal(x.nan_to_num(), X.nan_to_num())


def test_gradient_is_finite_at_zero_and_exact_elsewhere():
    x = torch.tensor([0.0, 0.25, 1.0, 7.5], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(safe_rsqrt(x).sum(), x)
    assert grad[0] == 0
    exact = -0.5 * x.detach()[1:] ** -1.5
    torch.testing.assert_close(grad[1:], exact, rtol=1e-12, atol=0)


def test_forward_mode_derivative_is_finite_at_zero_and_exact_elsewhere():
    x = torch.tensor([0.0, 0.25, 4.0], dtype=torch.float64)
    _, tangent = jvp(safe_rsqrt, (x,), (torch.ones_like(x),))
    assert tangent[0] == 0       # the one-sided choice of safe_sqrt at zero variance
    torch.testing.assert_close(tangent[1:], -0.5 * x[1:] ** -1.5, rtol=1e-12, atol=0)
