"""Rectified monomials, monomials, polynomials, exponentials, Gaussians and sign: each closed form
against a 30-digit reference from a different route (tests/mp_nonlinear_reference.py: a 1-D
reduction with textbook inner Gaussian integrals), against Price's theorem, against the
quadrature path, and for finite, differentiable values at rho = +-1 and at zero variance.
"""

from __future__ import annotations

import math

import mp_nonlinear_reference as ref
import pytest
import torch

import torchntk as tn

# (activation, its reference entry). Degrees 0..4 cover the step, ReLU and the orders where
# neural-tangents 0.6.5 returns NaN (k >= 2).
CASES = [
    (tn.RectifiedMonomial(0), ref.rectified_monomial(0)),
    (tn.RectifiedMonomial(1), ref.rectified_monomial(1)),
    (tn.RectifiedMonomial(2), ref.rectified_monomial(2)),
    (tn.RectifiedMonomial(3), ref.rectified_monomial(3)),
    (tn.RectifiedMonomial(4), ref.rectified_monomial(4)),
    (tn.Monomial(0), ref.polynomial([1])),
    (tn.Monomial(2), ref.polynomial([0, 0, 1])),
    (tn.Monomial(3), ref.polynomial([0, 0, 0, 1])),
    (tn.Monomial(5), ref.polynomial([0, 0, 0, 0, 0, 1])),
    (tn.Polynomial([0.5, -1.0, 0.25, 2.0]), ref.polynomial([0.5, -1.0, 0.25, 2.0])),
    (tn.Exp(), ref.exponential(1, 1)),
    (tn.Exp(0.5, -0.7), ref.exponential(0.5, -0.7)),
    (tn.Gaussian(), ref.gaussian(1, -1)),
    (tn.Gaussian(2.0, -0.3), ref.gaussian(2, -0.3)),
    (tn.Sign(), ref.sign()),
]

# (var1, var2, rho): generic, independent, anti-correlated, nearly and exactly (anti)parallel,
# zero, tiny, large and unequal scales.
MOMENTS = [
    (1.3, 0.7, 0.45), (1.0, 1.0, 0.0), (0.8, 2.1, -0.7), (1.1, 0.9, 0.999), (1.5, 1.5, 1.0),
    (0.6, 0.6, -1.0), (1e-6, 2e-6, 0.3), (0.0, 0.9, 0.0), (40.0, 25.0, 0.6), (1e-3, 1e3, 0.2),
]


def _tensors(*values):
    return [torch.tensor([v], dtype=torch.float64) for v in values]


def _has_ntk(act):
    return not isinstance(act, tn.Sign) and not (isinstance(act, tn.RectifiedMonomial) and act.degree == 0)


# Every moment for one member of each family; the edge cases (anti-correlated, rho = +-1, zero
# and tiny variances) for the others, to keep the 30-digit quadratures within a few seconds.
EDGES = [MOMENTS[i] for i in (2, 4, 5, 6, 7)]
FULL = ("RectifiedMonomial(2)", "Monomial", "Polynomial", "Exp(a=1.0, b=1.0)", "Gaussian(a=1.0, b=-1.0)", "Sign")
GRID = [(act, entry, *moments) for act, entry in CASES
        for moments in (MOMENTS if repr(act).startswith(FULL) else EDGES)]


@pytest.mark.parametrize("act, entry, v1, v2, rho", GRID,
                         ids=[f"{act!r}-{v1}-{v2}-{rho}" for act, _, v1, v2, rho in GRID])
def test_closed_form_matches_30_digit_reference(act, entry, v1, v2, rho):
    c = rho * math.sqrt(v1 * v2)
    ess, edd = act.expectations(*_tensors(v1, v2, c), derivative=_has_ntk(act))
    want_ess, want_edd = ref.expectations(entry, v1, v2, c)
    # float64 closed forms: a few ulps per operation, amplified at most ~100x (arccos near
    # rho = 0.999, Horner sums), so 1e-12 relative. Where the value itself cancels towards 0
    # (rectified monomials near rho = -1, whose two arc-cosine terms cancel; the polynomial's
    # mixed signs) the error is round-off relative to the natural scale of the quantity, the
    # Cauchy-Schwarz bound sqrt(E[s(u)^2] E[s(v)^2]): an absolute floor of 1e-14 times it.
    (e11, d11), (e22, d22) = ref.second_moments(entry, v1), ref.second_moments(entry, v2)
    assert ess.item() == pytest.approx(float(want_ess), rel=1e-12, abs=1e-14 * math.sqrt(e11 * e22))
    if _has_ntk(act):
        assert edd.item() == pytest.approx(float(want_edd), rel=1e-12, abs=1e-14 * math.sqrt(d11 * d22))
