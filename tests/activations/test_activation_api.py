"""The new activations as objects: reprs that rebuild them, JSON-able configs, names, clear errors
for bad parameters, and the jump functions (Sign, the step) whose NTK does not exist."""

from __future__ import annotations

import json

import pytest
import torch

import torchntk as tn

ACTIVATIONS = [
    tn.RectifiedMonomial(0), tn.RectifiedMonomial(3), tn.Monomial(4), tn.Polynomial([1.0, -0.5, 0.25]),
    tn.Exp(), tn.Exp(0.5, -2.0), tn.Gaussian(), tn.Gaussian(2.0, 0.1), tn.Sign(),
]


def _moments():
    v1 = torch.tensor([[1.2], [0.4]], dtype=torch.float64)
    v2 = torch.tensor([[0.8, 0.3]], dtype=torch.float64)
    return v1, v2, torch.tensor([[0.5, -0.2], [0.1, 0.3]], dtype=torch.float64)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=repr)
def test_repr_and_config_rebuild_the_activation(act):
    rebuilt_from_repr = eval(repr(act), {name: getattr(tn, name) for name in tn.__dir__()})
    rebuilt_from_config = type(act)(**json.loads(json.dumps(act.config())))
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    for other in (rebuilt_from_repr, rebuilt_from_config):
        assert type(other) is type(act) and repr(other) == repr(act) and other.config() == act.config()
        assert torch.equal(other(x), act(x))
        assert torch.equal(other.expectations(*_moments(), derivative=False)[0],
                           act.expectations(*_moments(), derivative=False)[0])


def test_reprs_read_as_code():
    assert repr(tn.RectifiedMonomial(2)) == "RectifiedMonomial(2)"
    assert repr(tn.Monomial(3)) == "Monomial(3)"
    assert repr(tn.Polynomial([1, 0, 2])) == "Polynomial([1.0, 0.0, 2.0])"
    assert repr(tn.Gaussian()) == "Gaussian(a=1.0, b=-1.0)" and repr(tn.Exp(2, 3)) == "Exp(a=2.0, b=3.0)"
    assert repr(tn.Sign()) == "Sign()"
    assert tn.RectifiedMonomial(2).config() == {"degree": 2}
    assert tn.Polynomial([1, 0, 2]).config() == {"coefficients": [1.0, 0.0, 2.0]}


def test_polynomial_coefficients_from_arrays():
    import numpy as np

    for given in (np.array([1.0, 0.5]), torch.tensor([1.0, 0.5]), (1, 0.5)):
        assert tn.Polynomial(given).config() == {"coefficients": [1.0, 0.5]}


def test_names_in_get_activation():
    assert repr(tn.get_activation("sign")) == "Sign()"
    assert repr(tn.get_activation("step")) == "RectifiedMonomial(0)"
    assert repr(tn.get_activation("Exp")) == "Exp(a=1.0, b=1.0)"
    assert repr(tn.get_activation("gaussian")) == "Gaussian(a=1.0, b=-1.0)"


def test_the_functions_are_what_their_names_say():
    """Forward values as finite networks see them (float64, exact up to pow/exp rounding)."""
    x = torch.tensor([-1.5, -0.3, 0.0, 0.4, 2.0], dtype=torch.float64)
    torch.testing.assert_close(tn.RectifiedMonomial(3)(x), x.clamp_min(0) ** 3, rtol=1e-15, atol=0)
    assert torch.equal(tn.RectifiedMonomial(0)(x), torch.tensor([0.0, 0, 0, 1, 1], dtype=torch.float64))
    assert torch.equal(tn.Sign()(x), torch.sign(x))
    torch.testing.assert_close(tn.Polynomial([1.0, -0.5, 0.25])(x), 1 - 0.5 * x + 0.25 * x**2, rtol=1e-15, atol=0)
    torch.testing.assert_close(tn.Exp(0.5, -2.0)(x), 0.5 * torch.exp(-2 * x), rtol=1e-15, atol=0)
    torch.testing.assert_close(tn.Gaussian(2.0, 0.1)(x), 2 * torch.exp(0.1 * x**2), rtol=1e-15, atol=0)
    for act in (tn.RectifiedMonomial(3), tn.Polynomial([1.0, -0.5, 0.25]), tn.Exp(0.5, -2.0), tn.Gaussian()):
        # The built-in derivative is autograd's (so quadrature and finite networks agree).
        z = x.clone().requires_grad_(True)
        (auto,) = torch.autograd.grad(act(z).sum(), z)
        torch.testing.assert_close(act.grad(x), auto, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("make, message", [
    (lambda: tn.RectifiedMonomial(-1), "between 0 and 64"),
    (lambda: tn.RectifiedMonomial(2.0), "integer"),
    (lambda: tn.Monomial(65), "between 0 and 64"),
    (lambda: tn.Monomial(True), "integer"),
    (lambda: tn.Polynomial([]), "between 1 and 65"),
    (lambda: tn.Polynomial("12"), "sequence"),
    (lambda: tn.Polynomial([1.0, float("nan")]), "finite"),
    (lambda: tn.Polynomial([1.0, "x"]), "real number"),
    (lambda: tn.Exp(a=float("inf")), "finite"),
    (lambda: tn.Gaussian(b="1"), "real number"),
])
def test_bad_parameters_say_what_is_wrong(make, message):
    with pytest.raises((TypeError, ValueError), match=message):
        make()


def test_growing_gaussian_raises_where_its_moments_are_infinite():
    """a exp(b x^2) with b > 0: E[s(u)^2] = a^2 / sqrt(1 - 4 b var) is infinite for var >= 1/(4b)."""
    act = tn.Gaussian(1.0, 0.1)
    ok = torch.tensor([2.0], dtype=torch.float64)
    assert torch.isfinite(act.expectations(ok, ok, ok)[0]).all()
    big = torch.tensor([2.6], dtype=torch.float64)                  # 4 * 0.1 * 2.6 > 1
    with pytest.raises(ValueError, match="infinite"):
        act.expectations(big, big, big)
    with pytest.raises(ValueError, match="infinite"):
        tn.mlp(3, act, weight_std=3.0).nngp(torch.ones(2, 3, dtype=torch.float64))


# -- functions whose derivative is not a function ---------------------------------------------

JUMPS = [tn.Sign(), tn.RectifiedMonomial(0)]


@pytest.mark.parametrize("act", JUMPS, ids=repr)
def test_jumps_have_an_nngp_and_refuse_an_ntk(act):
    v1, v2, cov = _moments()
    ess, edd = act.expectations(v1, v2, cov, derivative=False)
    assert edd is None and torch.isfinite(ess).all()
    with pytest.raises(ValueError, match="no derivative as a function"):
        act.expectations(v1, v2, cov)
    with pytest.raises(ValueError, match="Dirac delta"):
        act.grad(torch.zeros(3))
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    spec = tn.mlp(3, act, bias_std=0.1)
    assert torch.isfinite(spec.nngp(x)).all()
    for ask in (spec.kernels, spec.ntk):
        with pytest.raises(ValueError, match=repr(act).replace("(", r"\(").replace(")", r"\)")):
            ask(x)


def test_sign_nngp_is_two_over_pi_arcsin_rho():
    """E[sign u sign v] = (2/pi) arcsin(rho) (exact; 1e-15 relative), 1 on the diagonal exactly and
    0 where a variance is 0 (sign(0) = 0)."""
    v1 = torch.tensor([[1.2], [0.0]], dtype=torch.float64)
    v2 = torch.tensor([[0.8, 1.2]], dtype=torch.float64)
    cov = torch.tensor([[0.5, 1.2], [0.0, 0.0]], dtype=torch.float64)
    ess, _ = tn.Sign().expectations(v1, v2, cov, derivative=False)
    rho = 0.5 / (1.2 * 0.8) ** 0.5
    torch.testing.assert_close(ess[0, 0], torch.asin(torch.tensor(rho, dtype=torch.float64)) * 2 / torch.pi,
                               rtol=1e-15, atol=0)
    assert ess[0, 1] == 1.0 and ess[1, 0] == 0.0 and ess[1, 1] == 0.0


@pytest.mark.parametrize("act", JUMPS, ids=repr)
def test_finite_networks_with_jumps_run_forward_and_refuse_gradients(act):
    """Forward passes work; back-propagating through the jump (training the layers below it, an
    empirical NTK) raises instead of autograd's silent zero derivative."""
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    net = tn.mlp(3, act, bias_std=0.1).network(width=16, seed=0, dtype=torch.float64)
    y = net(x)
    assert y.shape == (4, 1) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="no derivative as a function"):
        y.sum().backward()
    with pytest.raises(ValueError, match="no derivative as a function"):
        tn.empirical_ntk(net, x)
    # With the layers below the jumps frozen nothing differentiates through them: the readout's
    # kernel is defined and computed.
    for layer in net.dense[:-1]:
        layer.requires_grad_(False)
    assert torch.isfinite(tn.empirical_ntk(net, x)).all()
