"""FanInProd: the product of independent branches, K' = prod_b K_b and Theta' = sum_b Theta_b
prod_(b' != b) K_b' (neural-tangents' values are in test_neural_tangents_layers.py; Monte Carlo over
finite networks in test_arch_networks.py)."""

from __future__ import annotations

import pytest
import torch

import torchntk as tn

X = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_the_product_of_two_independent_dense_branches_multiplies_their_kernels():
    f = tn.serial(tn.Dense(), tn.ReLU(), tn.Dense(bias_std=0.3))
    g = tn.serial(tn.Dense(), tn.Erf(), tn.Dense(weight_std=1.5))
    spec = tn.serial(tn.Dense(), tn.FanOut(2), tn.parallel(tn.serial(tn.ReLU(), tn.Dense(bias_std=0.3)),
                                                           tn.serial(tn.Erf(), tn.Dense(weight_std=1.5))),
                     tn.FanInProd(), tn.Dense(bias_std=0.0))
    kf, tf = f.kernels(X)
    kg, tg = g.kernels(X)
    k, t = spec.kernels(X)
    # the last Dense (no bias, weight_std 1) passes K on and adds it to Theta
    torch.testing.assert_close(k, kf * kg, rtol=1e-13, atol=0)
    torch.testing.assert_close(t, tf * kg + kf * tg + kf * kg, rtol=1e-13, atol=0)
    nngp_diag, ntk_diag = spec.kernels(X, diagonal=True)
    torch.testing.assert_close(ntk_diag, t.diagonal(), rtol=1e-13, atol=0)


def test_correlated_factors_are_refused():
    # ReLU and Identity of the same hidden layer are functions of one input: E[f g f' g'] is not
    # E[f f'] E[g g'].
    bad = tn.serial(tn.Dense(), tn.FanOut(2), tn.parallel(tn.ReLU(), tn.Identity()), tn.FanInProd(), tn.Dense())
    with pytest.raises(tn.ArchitectureError, match="kernel of their product is not the product of their kernels"):
        bad.kernels(X)


def test_a_product_is_not_gaussian_so_a_nonlinearity_cannot_follow_it():
    spec = tn.serial(tn.Dense(), tn.FanOut(2), tn.parallel(tn.Dense(), tn.Dense()), tn.FanInProd(), tn.ReLU(),
                     tn.Dense())
    with pytest.raises(tn.ArchitectureError, match="needs a Gaussian input"):
        spec.kernels(X)


def test_descriptions_with_products_round_trip_through_json():
    spec = tn.serial(tn.Dense(), tn.FanOut(2), tn.parallel(tn.serial(tn.Hermite(3), tn.Dense()),
                                                           tn.serial(tn.Rbf(0.25), tn.Dense())),
                     tn.FanInProd(), tn.Dense())
    again = tn.from_dict(spec.to_dict())
    assert repr(again) == repr(spec)
    for ours, theirs in zip(spec.kernels(X), again.kernels(X), strict=True):
        assert torch.equal(ours, theirs)
    net = spec.network(width=8, seed=0, dtype=torch.float64)
    assert net(X).shape == (5, 1)
