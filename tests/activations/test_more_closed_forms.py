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
    (tn.Monomial(12), ref.polynomial([0] * 12 + [1])),
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


WITH_NTK = [act for act, _ in CASES if _has_ntk(act)]
ALL = [act for act, _ in CASES]


def _grid(seed=0, n1=6, n2=5):
    """Random variances in [0.3, 1.3] and correlations in (-1, 1), as a (n1, n2) kernel block."""
    g = torch.Generator().manual_seed(seed)
    v1 = torch.rand(n1, 1, generator=g, dtype=torch.float64) + 0.3
    v2 = torch.rand(1, n2, generator=g, dtype=torch.float64) + 0.3
    cov = (v1 * v2).sqrt() * (2 * torch.rand(n1, n2, generator=g, dtype=torch.float64) - 1)
    return v1, v2, cov


@pytest.mark.parametrize("act", WITH_NTK, ids=repr)
def test_price_theorem_links_the_two_expectations(act):
    """d/dcov E[s(u) s(v)] = E[s'(u) s'(v)] (Price's theorem), by autograd through the closed form:
    the two formulas are checked against each other, to round-off (1e-12 relative)."""
    v1, v2, cov = _grid()
    cov.requires_grad_(True)
    ess, edd = act.expectations(v1, v2, cov)
    (slope,) = torch.autograd.grad(ess.sum(), cov)
    torch.testing.assert_close(slope, edd.detach(), rtol=1e-12, atol=1e-14 * edd.abs().max().item())


# Monomial(12)'s integrand spans ~25 decades over the polar rule's nodes: the quadrature, not
# the closed form, is the inaccurate one there (the 30-digit test covers it).
@pytest.mark.parametrize("act", [a for a in ALL if repr(a) != "Monomial(12)"], ids=repr)
def test_closed_forms_match_the_quadrature_path(act):
    """The polar quadrature at 64 nodes (kinks and jumps on panel boundaries, so geometric
    convergence) agrees with every closed form to 4e-13 of the block's largest entry (measured),
    so 1e-11; except Monomial(5), 1.3e-11 measured, so 1e-10: its integrand u^5 v^5 takes both
    signs and spans ~10 decades over the rule's nodes, so the quadrature's own sum loses digits
    (the closed form itself matches the 30-digit reference to 1e-12 above)."""
    v1, v2, cov = _grid()
    derivative = _has_ntk(act)
    exact = act.expectations(v1, v2, cov, derivative=derivative)
    quad = type(act)(**act.config())
    quad.nodes = 64
    for a, b in zip(exact, quad.quadrature_expectations(v1, v2, cov, derivative=derivative), strict=True):
        if a is not None:
            tolerance = 1e-10 if repr(act) == "Monomial(5)" else 1e-11
            torch.testing.assert_close(a, b, rtol=0, atol=tolerance * b.abs().max().item())


EDGE_POINTS = [  # (var1, var2, cov): rho = 1, rho = -1, the diagonal, zero variances
    (1.3, 0.7, math.sqrt(1.3 * 0.7)), (1.3, 0.7, -math.sqrt(1.3 * 0.7)), (0.9, 0.9, 0.9),
    (0.0, 0.7, 0.0), (0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("act", ALL, ids=repr)
@pytest.mark.parametrize("point", EDGE_POINTS)
def test_values_and_derivatives_are_finite_at_the_edges(act, point):
    """At rho = +-1 and at zero variance the values and their derivatives in (var1, var2, cov), by
    reverse mode and by torch.func.jvp, are finite (neural-tangents 0.6.5 gives NaN for
    RectifiedMonomial(2) there)."""
    derivative = _has_ntk(act)
    inputs = [t.requires_grad_(True) for t in _tensors(*point)]
    outputs = [o for o in act.expectations(*inputs, derivative=derivative) if o is not None]
    for out in outputs:
        assert torch.isfinite(out).all()
        grads = torch.autograd.grad(out.sum(), inputs, allow_unused=True, retain_graph=True)
        assert all(g is None or torch.isfinite(g).all() for g in grads)
    primals = _tensors(*point)
    for direction in torch.eye(3, dtype=torch.float64):
        tangents = tuple(d.reshape(1) for d in direction)
        values, slopes = torch.func.jvp(lambda a, b, c: act.expectations(a, b, c, derivative=derivative)[0],
                                        tuple(primals), tangents)
        assert torch.isfinite(values).all() and torch.isfinite(slopes).all()


@pytest.mark.parametrize("act", WITH_NTK, ids=repr)
def test_gradcheck(act):
    """Reverse-mode and forward-mode derivatives of both expectations against finite differences
    (torch.autograd.gradcheck's float64 defaults), and second derivatives (gradgradcheck)."""
    v1, v2, cov = (t[:3, :2].detach().clone().requires_grad_(True) for t in _grid())
    v2 = v2.detach()[:, :2].clone().requires_grad_(True)

    def both(a, b, c):
        return act.expectations(a, b, c)

    assert torch.autograd.gradcheck(both, (v1, v2, cov), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(both, (v1, v2, cov))


@pytest.mark.parametrize("act", ALL, ids=repr)
def test_broadcasting_with_trailing_spatial_dimensions(act):
    """var1 (n1, 1, P), var2 (1, n2, P), cov (n1, n2, P) gives, per position, the (n1, n2) result,
    and the diagonal form (n,) gives the full form's entries (same arithmetic: 1e-15)."""
    derivative = _has_ntk(act)
    blocks = [_grid(seed) for seed in range(3)]
    v1 = torch.stack([b[0] for b in blocks], dim=-1)
    v2 = torch.stack([b[1] for b in blocks], dim=-1)
    cov = torch.stack([b[2] for b in blocks], dim=-1)
    together = act.expectations(v1, v2, cov, derivative=derivative)
    for p, block in enumerate(blocks):
        alone = act.expectations(*block, derivative=derivative)
        for a, b in zip(together, alone, strict=True):
            if a is not None:
                torch.testing.assert_close(a[..., p], b, rtol=1e-15, atol=0)
    a1, a2, c = (t.expand(6, 5).reshape(-1) for t in blocks[0])
    flat = act.expectations(a1, a2, c, derivative=derivative)
    for a, b in zip(flat, act.expectations(*blocks[0], derivative=derivative), strict=True):
        if a is not None:
            torch.testing.assert_close(a, b.reshape(-1), rtol=1e-15, atol=0)


def test_the_first_orders_are_relu_and_identity():
    """RectifiedMonomial(1) is ReLU and Monomial(1) is the identity: the same kernels through the
    full recursion (different formulas, so to 1e-13 relative)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    for new, old in ((tn.RectifiedMonomial(1), "relu"), (tn.Monomial(1), "identity")):
        for a, b in zip(tn.mlp(4, new, bias_std=0.2).kernels(x), tn.mlp(4, old, bias_std=0.2).kernels(x),
                        strict=True):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_rectified_monomial_degrees_match_cho_and_saul():
    """The arc-cosine polynomials reproduce Cho and Saul's J_1, J_2, J_3 (their equation (7))."""
    from torchntk.activations.arccosine import arccos_polynomials

    assert arccos_polynomials(0) == ((1,), (0,))
    assert arccos_polynomials(1) == ((0, 1), (1,))                 # sin + (pi - theta) cos
    assert arccos_polynomials(2)[0] == (1, 0, 2)                    # (pi - theta)(1 + 2 cos^2)
    assert arccos_polynomials(2)[1] == (0, 3)                       # 3 sin cos
    a3, b3 = arccos_polynomials(3)                                  # (pi - theta)(9 sin^2 cos + 15 cos^3)
    assert a3 == (0, 9, 0, 6) and b3 == (4, 0, 11)                  # 4 sin^3 + 15 sin cos^2
