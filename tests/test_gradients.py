"""Kernels are differentiable by autograd in the inputs and in bias_std / weight_std, and the
gradients stay finite at the diagonal and at duplicate inputs (correlation exactly 1)."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

import torchntk as tn

SMOOTH = ["erf", "gelu", "sin", "tanh"]


def _x(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "abs", *SMOOTH])
def test_gradcheck_in_the_inputs(activation):
    """Central finite differences (eps 1e-6) against autograd, away from rho = 1 where the
    ReLU-family NTK has a cusp; gradcheck's default tolerances (atol 1e-5, rtol 1e-3)."""
    spec = tn.mlp(3, activation, bias_std=0.2)
    x1 = _x(3, 2, 0).requires_grad_(True)
    x2 = _x(2, 2, 1).requires_grad_(True)
    assert gradcheck(lambda a, b: spec.kernels(a, b), (x1, x2))


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_gradcheck_in_the_scales(activation):
    x1, x2 = _x(3, 2, 2), _x(2, 2, 3)

    def kernels(b, w):
        return tn.mlp(3, activation, bias_std=b, weight_std=w).kernels(x1, x2)

    b = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    w = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    assert gradcheck(kernels, (b, w))


@pytest.mark.parametrize("activation", ["relu", "abs", "erf", "gelu", "tanh"])
def test_gradients_are_finite_at_the_diagonal_and_at_duplicates(activation):
    spec = tn.mlp(4, activation, bias_std=0.1)
    base = _x(3, 3, 4)
    x = torch.cat([base, base[:1], torch.zeros(1, 3)]).requires_grad_(True)   # a duplicate and a zero row
    b = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    spec_b = tn.mlp(4, activation, bias_std=b)
    for kernels in (spec.kernels(x), spec.kernels(x, x), spec_b.kernels(x)):
        grads = torch.autograd.grad(sum(k.sum() for k in kernels), [x, b], allow_unused=True)
        assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_gradient_of_the_diagonal_matches_the_diagonal_path():
    """k(x, x) read off the full matrix and from diagonal=True are the same function of x, so
    their gradients agree. In the full matrix the correlation is 1 by construction and the
    guarded arc-cosine derivative multiplies a d(rho) of round-off size (~1e-16 * 1/sqrt(eps)):
    agreement to 1e-7 relative."""
    spec = tn.mlp(4, "relu", bias_std=0.1)
    x = _x(5, 3, 5).requires_grad_(True)
    (g_full,) = torch.autograd.grad(spec.ntk(x).diagonal().sum(), x)
    (g_diag,) = torch.autograd.grad(spec.ntk(x, diagonal=True).sum(), x)
    torch.testing.assert_close(g_full, g_diag, rtol=1e-7, atol=1e-12)


def test_grad_path_and_fast_path_agree():
    """With gradients on, the recursion runs out of place through autograd-aware functions;
    without, in place. Same formulas, float64 round-off apart."""
    spec = tn.mlp(5, "leaky_relu", bias_std=0.2)
    x = _x(30, 4, 6)
    fast = spec.kernels(x)
    slow = spec.kernels(x.clone().requires_grad_(True))
    for a, b in zip(fast, slow, strict=False):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("activation", ["relu", "erf", "gelu", "tanh"])
def test_forward_mode_jvp_matches_finite_differences(activation):
    """torch.func.jvp works through every path (custom autograd Functions define jvp, and the
    quadrature's sigma' switches to forward mode inside transforms). Central differences with
    step 1e-6: truncation ~1e-12, round-off ~1e-10; tolerance 1e-7 relative."""
    spec = tn.mlp(3, activation, bias_std=0.1)
    x, tangent, z = _x(4, 3, 7), _x(4, 3, 8), _x(2, 3, 9)

    def kernel(a):
        return spec.ntk(a, z)

    _, derivative = torch.func.jvp(kernel, (x,), (tangent,))
    step = 1e-6
    central = (kernel(x + step * tangent) - kernel(x - step * tangent)) / (2 * step)
    torch.testing.assert_close(derivative, central, rtol=1e-7, atol=1e-9)
