"""Proposition 1 by Monte Carlo: the output covariance of many wide random networks in the NTK
parameterisation approaches Sigma(L).

A small batched sampler draws M independent networks at once (all parameters iid N(0, 1),
forward a~(l+1) = w / sqrt(n_l) W a(l) + b * bias), independent of torchntk's own network code.
"""

from __future__ import annotations

import math

import pytest
import torch

import torchntk as tn


def sample_outputs(x: torch.Tensor, depth: int, width: int, count: int, activation, bias_std: float,
                   weight_std: float, seed: int, batch: int = 250) -> torch.Tensor:
    """Outputs f(x) of `count` independent random networks: (count, N)."""
    g = torch.Generator().manual_seed(seed)
    outs = []
    for _ in range(count // batch):
        a = x.expand(batch, *x.shape)                            # (B, N, n0)
        fan_in = x.shape[1]
        for layer in range(depth):
            fan_out = 1 if layer == depth - 1 else width
            w = torch.randn(batch, fan_in, fan_out, generator=g, dtype=x.dtype)
            b = torch.randn(batch, 1, fan_out, generator=g, dtype=x.dtype)
            a = weight_std / math.sqrt(fan_in) * torch.bmm(a, w) + bias_std * b
            if layer < depth - 1:
                a = activation(a)
            fan_in = fan_out
        outs.append(a[..., 0])
    return torch.cat(outs)


def _check(x, f, kernel, width):
    second = f.T @ f / f.shape[0]
    # Monte Carlo standard error of each entry of the second moment, from the samples.
    stderr = (f[:, :, None] * f[:, None, :]).std(dim=0) / math.sqrt(f.shape[0])
    # 4.5 standard errors (a false alarm about 1 in 150,000 per entry, < 1e-4 for all entries),
    # plus the O(1/width) finite-width bias of a depth-3 network, allowed as 2/width relative.
    tolerance = 4.5 * stderr + 2.0 / width * kernel.abs()
    return (second - kernel).abs() <= tolerance


WIDTH, COUNT = 128, 3000


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    x[5] = -x[0]                                                   # an antipodal pair
    return x


@pytest.fixture(scope="module")
def relu_outputs(inputs):
    return sample_outputs(inputs, depth=3, width=WIDTH, count=COUNT, activation=torch.relu, bias_std=0.3,
                          weight_std=1.2, seed=2)


def test_output_covariance_of_wide_relu_networks_is_sigma_L(inputs, relu_outputs):
    spec = tn.mlp(3, "relu", bias_std=0.3, weight_std=1.2)
    assert _check(inputs, relu_outputs, spec.nngp(inputs), width=WIDTH).all()


def test_output_covariance_of_wide_erf_networks_is_sigma_L(inputs):
    f = sample_outputs(inputs, depth=3, width=WIDTH, count=COUNT, activation=torch.erf, bias_std=0.3,
                       weight_std=1.2, seed=3)
    spec = tn.mlp(3, "erf", bias_std=0.3, weight_std=1.2)
    assert _check(inputs, f, spec.nngp(inputs), width=WIDTH).all()


def test_the_monte_carlo_check_has_power(inputs, relu_outputs):
    """The same check rejects a wrong kernel (bias 0.15 instead of 0.3): it is not vacuous."""
    wrong = tn.mlp(3, "relu", bias_std=0.15, weight_std=1.2).nngp(inputs)
    assert not _check(inputs, relu_outputs, wrong, width=WIDTH).all()
