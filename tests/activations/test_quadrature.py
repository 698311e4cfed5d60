"""Accuracy of the Gauss-Hermite path for nonlinearities without closed forms, against
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


# Documented accuracy (relative, NNGP term, variances ~1): error falls geometrically with the
# node count for analytic functions and algebraically for elu's kinked derivative.
ACCURACY = {  # name: {nodes: tolerance}
    "tanh": {32: 1e-5, 64: 1e-8, 128: 1e-12},
    "sigmoid": {32: 1e-10, 64: 1e-13},
    "softplus": {32: 1e-12},
    "silu": {32: 1e-10, 64: 1e-13},
    "elu": {32: 3e-4, 128: 5e-5},
}


@pytest.mark.parametrize("name", sorted(ACCURACY))
def test_gauss_hermite_accuracy_is_as_documented(name):
    v1, v2, c = 1.2, 0.8, 0.6
    want = _reference(NUMPY[name], v1, v2, c)
    t = [torch.tensor([v], dtype=torch.float64) for v in (v1, v2, c)]
    for nodes, tolerance in ACCURACY[name].items():
        got = tn.Activation(tn.get_activation(name).fn, nodes=nodes).expectations(*t, derivative=False)[0]
        assert abs(got.item() - want) <= tolerance * abs(want), (name, nodes, got.item(), want)


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
