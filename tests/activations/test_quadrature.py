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
