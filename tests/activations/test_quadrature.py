"""Accuracy of the quadrature path for nonlinearities without closed forms, against
scipy's adaptive 2-D quadrature (an independent method, converged to ~1e-14 absolute)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

import torchntk as tn

NUMPY = {
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "softplus": lambda x: np.logaddexp(0, x),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
}


def _reference(f, v1, v2, c):
    s1, s2 = math.sqrt(v1), math.sqrt(v2)
    rho = c / (s1 * s2)
    r = math.sqrt(1 - rho * rho)

    def integrand(z2, z1):
        return math.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * math.pi) * f(s1 * z1) * f(s2 * (rho * z1 + r * z2))

    value, _ = integrate.dblquad(integrand, -12, 12, -12, 12, epsabs=1e-14, epsrel=1e-13)
    return value


def _reference_split(f, v1, v2, c):
    """E[f(u) f(v)] by nested adaptive 1-D quadrature (scipy.integrate.quad, 1e-13 relative)
    over the whitened (z1, z2), split at the kinks/transitions u = 0 (z1 = 0) and v = 0
    (z2 = -rho z1 / r), so kinked derivatives (elu') and sharp ones (sech^2 at variance 30)
    converge fast; an independent method from the polar rule."""
    s1, s2 = math.sqrt(v1), math.sqrt(v2)
    rho = max(-1.0, min(1.0, c / (s1 * s2)))
    r = math.sqrt(max(0.0, 1 - rho * rho))
    if r < 1e-12:  # v = rho * s2 * z1: a 1-D integral
        value, _ = integrate.quad(lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
                                  * f(s1 * z) * f(s2 * rho * z), -12, 12, points=[0.0], epsabs=1e-15,
                                  epsrel=1e-13, limit=200)
        return value

    def inner(z1):
        kink = -rho * z1 / r
        value, _ = integrate.quad(lambda z2: math.exp(-z2 * z2 / 2) * f(s2 * (rho * z1 + r * z2)), -12, 12,
                                  points=[kink] if -12 < kink < 12 else None, epsabs=1e-15, epsrel=1e-13,
                                  limit=200)
        return math.exp(-z1 * z1 / 2) / (2 * math.pi) * f(s1 * z1) * value

    value, _ = integrate.quad(inner, -12, 12, points=[0.0], epsabs=1e-15, epsrel=1e-13, limit=200)
    return value


# Documented accuracy (torchntk.activations.base.DEFAULT_NODES), relative, NNGP term, at
# variances ~1 and ~10-30; the tolerances are the documented figures rounded up.
ACCURACY = {  # name: {nodes: (tolerance at (1.2, 0.8, 0.6), tolerance at (30, 20, -10))}
    "tanh": {16: (5e-4, 3e-3), 32: (5e-7, 3e-6), 64: (1e-13, 1e-10)},
    "sigmoid": {32: (1e-8, 1e-7), 64: (1e-13, 1e-12)},
    "softplus": {32: (1e-8, 1e-7), 64: (1e-13, 1e-12)},
    "silu": {32: (1e-9, 1e-6), 64: (1e-13, 1e-12)},
    "elu": {32: (1e-8, 3e-6), 64: (1e-13, 1e-12)},
}


@pytest.mark.parametrize("name", sorted(ACCURACY))
def test_quadrature_accuracy_is_as_documented(name):
    for column, (v1, v2, c) in enumerate([(1.2, 0.8, 0.6), (30.0, 20.0, -10.0)]):
        want = _reference(NUMPY[name], v1, v2, c)
        t = [torch.tensor([v], dtype=torch.float64) for v in (v1, v2, c)]
        for nodes, tolerances in ACCURACY[name].items():
            got = tn.Activation(tn.get_activation(name).fn, nodes=nodes).expectations(*t, derivative=False)[0]
            assert abs(got.item() - want) <= tolerances[column] * abs(want), (name, nodes, v1, got.item(), want)


DERIVATIVES = {
    "tanh": lambda x: 1 / np.cosh(x) ** 2,
    "sigmoid": lambda x: np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))) ** 2,
    "softplus": lambda x: 1 / (1 + np.exp(-x)),
    "silu": lambda x: 1 / (1 + np.exp(-x)) * (1 + x * np.exp(-x) / (1 + np.exp(-x))),
    "elu": lambda x: 1.0 if x > 0 else math.exp(x),
}

# Where the default's error peaks: the largest documented variances, and a nearly-perfect
# correlation at large variance (the product of two sharp sech^2 peaks on the same ray).
HARD_POINTS = [(30.0, 20.0, -10.0), (25.0, 25.0, 24.0), (6.0, 30.0, 13.0)]


@pytest.mark.parametrize("name", sorted(NUMPY))
def test_default_order_meets_1e_6_at_large_variance(name):
    """The documented accuracy of the default (adaptive) order: 1e-6 relative to the entry's
    Cauchy-Schwarz bound sqrt(E[s(u)^2] E[s(v)^2]) for both expectations, at variances up to 30
    (the measured worst case is 3e-7; see quadrature.ADAPTIVE_ORDERS)."""
    act = tn.get_activation(name)
    for v1, v2, c in HARD_POINTS[:2]:
        t = [torch.tensor([v], dtype=torch.float64) for v in (v1, v2, c)]
        ess, edd = act.expectations(*t)
        for got, f in ((ess, NUMPY[name]), (edd, DERIVATIVES[name])):
            bound = math.sqrt(_reference_split(f, v1, v1, v1) * _reference_split(f, v2, v2, v2))
            want = _reference_split(f, v1, v2, c)
            assert abs(got.item() - want) <= 1e-6 * bound, (name, v1, v2, c, got.item(), want)


def test_default_order_for_any_callable():
    """A user's callable (arctan, derivative by autograd) gets the same guarantee."""
    act = tn.Activation(torch.atan)
    v1, v2, c = HARD_POINTS[2]
    ess, edd = act.expectations(*(torch.tensor([v], dtype=torch.float64) for v in (v1, v2, c)))
    for got, f in ((ess, np.arctan), (edd, lambda x: 1 / (1 + x * x))):
        bound = math.sqrt(_reference_split(f, v1, v1, v1) * _reference_split(f, v2, v2, v2))
        assert abs(got.item() - _reference_split(f, v1, v2, c)) <= 1e-6 * bound


def test_depth_two_tanh_ntk_with_bias_one_at_large_variance():
    """The case that broke the old fixed order (2.2e-6 relative): Theta(2) = Sigma(1) SigmaDot(2)
    + Sigma(2) for a pair of inputs of variance ~20, bias_std 1, against scipy's dblquad; 1e-6
    relative is the documented accuracy."""
    x = torch.tensor([[4.0, 5.0, 3.0], [5.0, 3.0, -4.5]], dtype=torch.float64)
    ntk = tn.mlp(2, "tanh", bias_std=1.0).ntk(x)
    sigma = (x @ x.T / 3 + 1).numpy()
    ess = _reference_split(np.tanh, sigma[0, 0], sigma[1, 1], sigma[0, 1])
    edd = _reference_split(DERIVATIVES["tanh"], sigma[0, 0], sigma[1, 1], sigma[0, 1])
    want = sigma[0, 1] * edd + ess + 1.0
    assert abs(ntk[0, 1].item() - want) <= 1e-6 * abs(want)


def test_adaptive_order_groups_entries_and_keeps_symmetry():
    """Entries of different variances get different orders; the result is the same as each
    entry computed alone, and a kernel matrix stays exactly symmetric."""
    act = tn.get_activation("tanh")
    var = torch.tensor([0.5, 12.0, 40.0], dtype=torch.float64)
    cov = 0.3 * (var[:, None] * var[None, :]).sqrt()
    cov.diagonal().copy_(var)
    ess, edd = act.expectations(var[:, None], var[None, :], cov)
    assert torch.equal(ess, ess.T) and torch.equal(edd, edd.T)
    for i in range(3):
        for j in range(3):
            alone = act.expectations(var[i:i + 1], var[j:j + 1], cov[i, j:j + 1])
            torch.testing.assert_close(ess[i, j:j + 1], alone[0], rtol=1e-15, atol=0)  # same rule, same numbers
            torch.testing.assert_close(edd[i, j:j + 1], alone[1], rtol=1e-15, atol=0)


def test_tanh_derivative_term_at_large_variance():
    """E[tanh'(u) tanh'(v)] (sech^2, sharply peaked at variance 10) against scipy: the term that
    a tensor Gauss-Hermite rule got 22% wrong; 1e-5 relative at the default order."""
    want = _reference(lambda x: 1 / np.cosh(x) ** 2, 10.0, 10.0, 9.0)
    t = [torch.tensor([v], dtype=torch.float64) for v in (10.0, 10.0, 9.0)]
    got = tn.get_activation("tanh").expectations(*t)[1]
    assert abs(got.item() - want) <= 1e-5 * want


def test_autograd_derivative_equals_supplied_derivative():
    auto = tn.Activation(torch.tanh)
    given = tn.Activation(torch.tanh, derivative=lambda x: 1 - torch.tanh(x) ** 2)
    t = [torch.tensor([v], dtype=torch.float64) for v in (1.2, 0.8, 0.6)]
    # Same quadrature, derivative values equal to round-off.
    torch.testing.assert_close(auto.expectations(*t)[1], given.expectations(*t)[1], rtol=1e-14, atol=0)


def test_quadrature_is_symmetric_in_its_two_arguments():
    act = tn.get_activation("tanh")
    a, b, c = (torch.tensor([v], dtype=torch.float64) for v in (2.0, 0.5, 0.3))
    assert torch.equal(act.expectations(a, b, c)[0], act.expectations(b, a, c)[0])


def test_user_callable_with_its_own_derivative():
    def cube_root(x):
        return torch.sign(x) * x.abs() ** (1 / 3)

    with pytest.raises(TypeError, match="same shape"):
        tn.Activation(lambda x: x[:1]).check()
    act = tn.Activation(torch.sin, derivative=torch.cos, nodes=64)
    t = [torch.tensor([v], dtype=torch.float64) for v in (0.9, 1.4, 0.5)]
    torch.testing.assert_close(act.expectations(*t)[0], tn.Sin().expectations(*t)[0], rtol=1e-12, atol=0)
    assert tn.Activation(cube_root).name == "cube_root"
