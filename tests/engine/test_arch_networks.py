"""Finite networks of architectures: the same description, the same conventions, and the
paper's limits shown on them (Proposition 1 for the outputs, Theorem 1 for the empirical NTK)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchntk as tn


def cnn(parameterization: str = "ntk"):
    return tn.serial(tn.Conv((3, 3), padding="same", bias_std=0.2, parameterization=parameterization), tn.ReLU(),
                     tn.Conv((2, 2), stride=2, padding="valid", parameterization=parameterization), tn.Erf(),
                     tn.GlobalAvgPool(), tn.Dense(bias_std=0.1, parameterization=parameterization))


def resnet():
    block = tn.serial(tn.FanOut(2), tn.parallel(tn.serial(tn.ReLU(), tn.Conv((3, 3), padding="circular")),
                                                tn.Identity()), tn.FanInSum())
    return tn.serial(tn.Conv((3, 3), padding="same"), block, tn.AvgPool(2, padding="same"), tn.LayerNorm(), tn.ReLU(),
                     tn.Flatten(), tn.Dense())


def pooled():
    # sum pooling, edge-normalised averages and a global sum: the finite modules and the kernels
    # must count the same positions
    return tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.SumPool(2, stride=1, padding="same"),
                     tn.Conv((2, 2)), tn.ReLU(), tn.AvgPool(3, stride=2, padding="same", normalize_edges=True),
                     tn.GlobalSumPool(), tn.Dense())


def product():
    # a product of branches, then Hermite after LayerNorm and an Rbf: closed forms that must be the
    # limits of the finite modules
    branch = tn.serial(tn.FanOut(2), tn.parallel(tn.Conv((3, 3), padding="same"), tn.Identity()), tn.FanInProd())
    return tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), branch, tn.Conv((2, 2)), tn.LayerNorm(),
                     tn.Hermite(2), tn.Conv((1, 1)), tn.Rbf(0.5), tn.Flatten(), tn.Dense())


X = torch.from_numpy(np.random.default_rng(0).standard_normal((4, 1, 5, 5)))


def test_same_seed_same_network_and_lazy_equals_eager():
    lazy = cnn().network(width=8, out_features=3, seed=5, dtype=torch.float64)
    eager = cnn().network(width=8, out_features=3, seed=5, dtype=torch.float64, input_shape=(1, 5, 5))
    other = cnn().network(width=8, out_features=3, seed=6, dtype=torch.float64, input_shape=(1, 5, 5))
    y = eager(X)
    assert y.shape == (4, 3)
    assert torch.equal(lazy(X), y) and not torch.allclose(other(X), y)
    # the standard parameterisation is the same function at initialisation
    standard = cnn("standard").network(width=8, out_features=3, seed=5, dtype=torch.float64, input_shape=(1, 5, 5))
    torch.testing.assert_close(standard(X), y, rtol=1e-12, atol=1e-12)


def test_networks_check_their_inputs():
    net = cnn().network(width=4, seed=0, dtype=torch.float64, input_shape=(1, 5, 5))
    with pytest.raises(ValueError, match="built for inputs of shape"):
        net(torch.zeros(2, 1, 6, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        net(X.float())
    with pytest.raises(ValueError, match="width lists one size per hidden weighted layer"):
        cnn().network(width=[4, 4, 4])


def _output_moments(spec, width: int, seeds: int, out: int):
    """Mean over networks of each network's output covariance (averaged over its output units),
    and its standard error. The error bar is taken across networks, not across units: units of
    one finite network share its hidden layers, so they are not independent samples."""
    per_network = []
    for seed in range(seeds):
        f = spec.network(width=width, out_features=out, seed=seed, dtype=torch.float64, input_shape=(1, 5, 5))(X)
        per_network.append((f @ f.T / out).detach())
    per_network = torch.stack(per_network)
    return per_network.mean(0), per_network.std(0) / seeds ** 0.5


@pytest.mark.parametrize("make", [cnn, resnet, pooled, product], ids=["cnn", "resnet", "pooled", "product"])
def test_proposition_1_outputs_have_the_nngp_covariance(make):
    spec = make()
    mean, stderr = _output_moments(spec, width=128, seeds=100, out=32)
    nngp = spec.nngp(X)
    z = (mean - nngp) / stderr
    # 10 distinct entries; |z| < 4.5 fails by chance with probability ~1e-4 if the kernel is right.
    # The finite-width bias at 128 channels is O(1/128), inside the ~3% error bars.
    assert z.abs().max() < 4.5, z
    # power: a kernel 20% off is rejected by the same test
    assert ((mean - 1.2 * nngp) / stderr).abs().max() > 4.5


@pytest.mark.parametrize("make", [cnn, resnet], ids=["cnn", "resnet"])
def test_theorem_1_empirical_ntk_approaches_the_limit_at_rate_one_over_sqrt_width(make):
    spec = make()
    ntk = spec.ntk(X)
    widths, seeds = [16, 32, 64, 128, 256], 4
    errors = []
    for width in widths:
        e = []
        for seed in range(seeds):
            net = spec.network(width=width, out_features=1, seed=seed, dtype=torch.float64, input_shape=(1, 5, 5))
            emp = tn.empirical_ntk(net, X)[..., 0, 0]
            e.append(float(torch.linalg.norm(emp - ntk) / torch.linalg.norm(ntk)))
        errors.append(np.mean(e))
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    # The fluctuations of the empirical NTK are O(width^-1/2) (Theorem 1, with Lee et al.'s rate);
    # over 4 seeds and 5 widths the fitted slope lands within about +-0.2 of -1/2.
    assert -0.75 < slope < -0.3, (slope, errors)
    assert errors[-1] < 0.2


def test_the_fast_convolutional_empirical_ntk_serves_architecture_networks():
    from torchntk.empirical.conv_recognition import conv_plan

    spec = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.Conv((2, 2), stride=2, padding="circular"),
                     tn.Erf(), tn.GlobalAvgPool(), tn.Dense())
    net = spec.network(width=16, out_features=3, seed=0, dtype=torch.float64, input_shape=(1, 5, 5))
    assert conv_plan(net)   # recognised, not a fallback
    fast = tn.empirical_ntk(net, X, method="structured")
    # the Jacobian contraction is independent code; both are exact, so they agree to round-off
    torch.testing.assert_close(fast, tn.empirical_ntk(net, X, method="jacobian"), rtol=1e-12, atol=1e-14)


def test_maxpool_networks_run_and_monte_carlo_estimates_their_kernels():
    spec = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.MaxPool(2, padding="same"), tn.Conv(2), tn.ReLU(),
                     tn.Flatten(), tn.Dense())
    with pytest.raises(ValueError, match="monte_carlo_kernels"):
        spec.kernels(X)
    net = spec.network(width=8, out_features=2, seed=0, dtype=torch.float64, input_shape=(1, 5, 5))
    assert net(X).shape == (4, 2)
    mc = tn.monte_carlo_kernels(spec, X, width=32, n_samples=6, seed=0)
    again = tn.monte_carlo_kernels(spec, X, width=32, n_samples=6, seed=0)
    assert mc.ntk.shape == (4, 4) and np.isfinite(np.asarray(mc.ntk)).all()
    assert np.array_equal(np.asarray(mc.nngp), np.asarray(again.nngp))      # same seed, same numbers


def test_monte_carlo_kernels_of_an_architecture_match_its_exact_kernels():
    spec = cnn()
    mc = tn.monte_carlo_kernels(spec, X, width=128, n_samples=60, seed=1, kernels="nngp", out_features=16)
    z = (torch.as_tensor(mc.nngp) - spec.nngp(X)) / torch.as_tensor(mc.nngp_stderr)
    assert z.abs().max() < 4.5, z    # as in the Proposition 1 test above
