"""Every closed form against an independent 30-digit reference (tests/mp_reference.py: a 1-D
reduction with textbook inner Gaussian integrals and mpmath quadrature) and against the
quadrature path that any callable takes.
"""

from __future__ import annotations

import math

import mp_reference as ref
import pytest
import torch

import torchntk as tn

CLOSED = ["relu", "leaky_relu", "abs", "identity", "erf", "sin", "cos", "gelu"]

# (var1, var2, rho): generic, independent, anti-correlated, nearly and exactly (anti)parallel,
# tiny and large scales, unequal scales.
MOMENTS = [
    (1.3, 0.7, 0.45), (1.0, 1.0, 0.0), (0.8, 2.1, -0.7), (1.1, 0.9, 0.999), (1.5, 1.5, 1.0),
    (0.6, 0.6, -1.0), (1e-6, 2e-6, 0.3), (40.0, 25.0, 0.6), (1e-3, 1e3, 0.2),
]


def _moments(v1, v2, rho):
    c = rho * math.sqrt(v1 * v2)
    return [torch.tensor([value], dtype=torch.float64) for value in (v1, v2, c)], c


@pytest.mark.parametrize("name", CLOSED)
@pytest.mark.parametrize("v1, v2, rho", MOMENTS)
def test_closed_form_matches_30_digit_reference(name, v1, v2, rho):
    (t1, t2, tc), c = _moments(v1, v2, rho)
    ess, edd = tn.get_activation(name).expectations(t1, t2, tc)
    want_ess, want_edd = (float(v) for v in ref.expectations(name, v1, v2, c))
    # float64 closed forms: a few ulps per operation, amplified at most ~10x by arccos/arcsin
    # conditioning at |rho| = 0.999; 1e-12 relative. The absolute floor is round-off relative
    # to the natural scale of each quantity (sqrt(v1 v2) for E[s s] of the homogeneous
    # piecewise-linear family, 1 for bounded ones), needed where the value itself cancels to ~0.
    scale = math.sqrt(v1 * v2) if name in ("relu", "leaky_relu", "abs", "identity", "gelu") else 1.0
    assert ess.item() == pytest.approx(want_ess, rel=1e-12, abs=1e-14 * scale)
    assert edd.item() == pytest.approx(want_edd, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("name", ["erf", "sin", "cos", "gelu"])
def test_smooth_closed_forms_match_quadrature(name):
    """The quadrature path with 64 nodes is accurate to ~1e-14 for these entire functions at
    these scales (error falls geometrically in the order), so the two must agree to 1e-11."""
    act = tn.get_activation(name)
    g = torch.Generator().manual_seed(0)
    v1 = torch.rand(6, 1, generator=g, dtype=torch.float64) + 0.3
    v2 = torch.rand(1, 5, generator=g, dtype=torch.float64) + 0.3
    cov = (v1 * v2).sqrt() * (2 * torch.rand(6, 5, generator=g, dtype=torch.float64) - 1)
    exact = act.expectations(v1, v2, cov)
    act.nodes = 128
    quad = act.quadrature_expectations(v1, v2, cov)
    for a, b in zip(exact, quad, strict=False):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "abs"])
def test_piecewise_closed_forms_match_quadrature(name):
    """The polar quadrature puts the kink on a panel boundary, so it converges geometrically
    for these too: measured 3e-4 relative at 16 nodes and 1e-9 at 32 for the NNGP term, and
    3e-10 or better for the step-function term at 32 (radial rule's error). Agreement to 1e-8."""
    act = tn.get_activation(name)
    v1, v2 = torch.tensor([[1.2]], dtype=torch.float64), torch.tensor([[0.8]], dtype=torch.float64)
    cov = torch.tensor([[0.4]], dtype=torch.float64)
    exact = act.expectations(v1, v2, cov)
    quad = act.quadrature_expectations(v1, v2, cov)
    torch.testing.assert_close(quad[0], exact[0], rtol=1e-8, atol=0)
    torch.testing.assert_close(quad[1], exact[1], rtol=1e-8, atol=0)


def test_price_theorem_links_the_two_expectations():
    """d/dcov E[s(u) s(v)] = E[s'(u) s'(v)] (Price's theorem) for every closed form: checks each
    pair of formulas against each other by autograd."""
    for name in CLOSED:
        act = tn.get_activation(name)
        v1 = torch.tensor([1.3], dtype=torch.float64)
        v2 = torch.tensor([0.7], dtype=torch.float64)
        cov = torch.tensor([0.4], dtype=torch.float64, requires_grad=True)
        ess, edd = act.expectations(v1, v2, cov)
        (grad,) = torch.autograd.grad(ess.sum(), cov)
        torch.testing.assert_close(grad, edd.detach(), rtol=1e-12, atol=1e-14, msg=name)


def test_general_piecewise_linear_matches_reference():
    act = tn.PiecewiseLinear(2.0, -0.5)
    (t1, t2, tc), c = _moments(1.3, 0.7, 0.45)
    ess, edd = act.expectations(t1, t2, tc)
    f, df, mean_f, mean_df = ref._piecewise(2.0, -0.5)
    assert ess.item() == pytest.approx(float(ref.expectation(f, mean_f, 1.3, 0.7, c)), rel=1e-12)
    assert edd.item() == pytest.approx(float(ref.expectation(df, mean_df, 1.3, 0.7, c)), rel=1e-12)
