"""Hermite(n) and Rbf(gamma), neural-tangents' closed forms, against references of their own:
the Gaussian moments by quadrature, the generic polynomial route, and the RBF kernel itself."""

from __future__ import annotations

import math

import pytest
import torch

import torchntk as tn
from torchntk.activations import Polynomial

G = torch.Generator().manual_seed(3)
VAR1 = torch.rand(6, 1, generator=G, dtype=torch.float64) * 2 + 0.2
VAR2 = torch.rand(1, 5, generator=G, dtype=torch.float64) * 2 + 0.2
COV = (torch.rand(6, 5, generator=G, dtype=torch.float64) * 2 - 1) * (VAR1 * VAR2).sqrt()


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 5, 8, 13])
def test_hermite_closed_form_equals_the_polynomial_expansion(degree):
    # The same expectations through the Hermite series of a generic polynomial with h_n's
    # coefficients: two different sums, equal to round-off (1e-11 relative: the coefficients of
    # h_13 reach ~1e2 and partly cancel in the generic route).
    h = tn.Hermite(degree)
    ours, generic = h.expectations(VAR1, VAR2, COV), Polynomial(h.coefficients).expectations(VAR1, VAR2, COV)
    for a, b in zip(ours, generic, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_hermite_closed_form_equals_quadrature(degree):
    # The polar quadrature of torchntk's generic activations at 64 nodes: 1e-9 for these degrees.
    h = tn.Hermite(degree)
    exact = h.expectations(VAR1, VAR2, COV)
    numeric = tn.Activation(h.fn, h.derivative, nodes=64).expectations(VAR1, VAR2, COV)
    for a, b in zip(exact, numeric, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_hermite_at_unit_variance_is_a_power_of_the_correlation():
    rho = torch.linspace(-1, 1, 9, dtype=torch.float64)
    one = torch.ones_like(rho)
    for n in range(6):
        ess, edd = tn.Hermite(n).expectations(one, one, rho)
        torch.testing.assert_close(ess, rho ** n, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(edd, n * rho ** max(n - 1, 0) if n else torch.zeros_like(rho), rtol=1e-14,
                                   atol=1e-15)
    # normalised: E[h_n(z)^2] = 1 for z ~ N(0, 1)
    assert tn.Hermite(4).coefficients[0] == pytest.approx(3 / math.sqrt(24))


def test_rbf_after_a_dense_layer_is_the_rbf_kernel_of_the_inputs():
    # Dense without bias, weight_std 1: Sigma = x.x'/d, so var1 + var2 - 2 cov = |x - x'|^2 / d.
    x = torch.randn(7, 4, generator=G, dtype=torch.float64)
    spec = tn.serial(tn.Dense(bias_std=0.0), tn.Rbf(0.6), tn.Dense(bias_std=0.0))
    expect = torch.exp(-0.6 * torch.cdist(x, x) ** 2 / 4)
    torch.testing.assert_close(spec.nngp(x), expect, rtol=1e-13, atol=1e-15)


def test_rbf_closed_form_equals_quadrature_and_checks_gamma():
    r = tn.Rbf(0.7)
    exact = r.expectations(VAR1, VAR2, COV)
    numeric = tn.Activation(r.fn, r.derivative, nodes=64).expectations(VAR1, VAR2, COV)
    for a, b in zip(exact, numeric, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
            tn.Rbf(bad)
