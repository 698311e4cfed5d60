"""The new activations inside full networks: the conformance checks every activation passes
(symmetry, diagonal, blocks of K([X; Z]), positive semi-definiteness), and Monte Carlo over wide
random networks for max(x, 0)^2, whose NTK neural-tangents 0.6.5 returns as NaN."""

from __future__ import annotations

import math

import pytest
import torch

import torchntk as tn

WITH_NTK = [tn.RectifiedMonomial(2), tn.RectifiedMonomial(3), tn.Monomial(3), tn.Polynomial([0.2, 1.0, -0.3]),
            tn.Exp(0.5, 0.5), tn.Gaussian(), tn.Gaussian(2.0, -0.3)]
NNGP_ONLY = [tn.Sign(), tn.RectifiedMonomial(0)]


def _inputs(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def _conformance(spec, compute):
    x, z = _inputs(8, 4, 5), _inputs(5, 4, 6)
    full = compute(spec, x)
    for k in full:
        # x2=None is exactly symmetric.
        assert torch.equal(k, k.T) and torch.isfinite(k).all()
        # Positive semi-definite up to an eigensolver's round-off on this matrix.
        eig = torch.linalg.eigvalsh(k)
        assert eig.min() >= -1e-12 * eig.max()
    # diagonal=True is the diagonal of the full matrix (same arithmetic up to operation order).
    for kd, k in zip(compute(spec, x, diagonal=True), full, strict=True):
        torch.testing.assert_close(kd, k.diagonal(), rtol=1e-13, atol=0)
    # Blocks of K([X; Z]) equal K(X, Z): 1e-12 allows the GEMM's blocking to round differently.
    for kb, kc in zip(compute(spec, torch.cat([x, z])), compute(spec, x, z), strict=True):
        torch.testing.assert_close(kb[:8, 8:], kc, rtol=1e-12, atol=1e-13 * kc.abs().max().item())


@pytest.mark.parametrize("act", WITH_NTK, ids=repr)
def test_conformance(act):
    _conformance(tn.mlp(3, act, bias_std=0.2), lambda spec, *a, **k: spec.kernels(*a, **k))


@pytest.mark.parametrize("act", NNGP_ONLY, ids=repr)
def test_conformance_of_the_nngp_of_jumps(act):
    _conformance(tn.mlp(3, act, bias_std=0.2), lambda spec, *a, **k: (spec.nngp(*a, **k),))


def _sample_outputs(x, depth, width, count, activation, bias_std, seed, batch=200):
    """f(x) of ``count`` independent random networks in the NTK parameterisation, (count, N): a
    batched sampler of its own (all parameters iid N(0, 1)), independent of torchntk's networks."""
    g = torch.Generator().manual_seed(seed)
    outs = []
    for _ in range(count // batch):
        a = x.expand(batch, *x.shape)
        fan_in = x.shape[1]
        for layer in range(depth):
            fan_out = 1 if layer == depth - 1 else width
            w = torch.randn(batch, fan_in, fan_out, generator=g, dtype=x.dtype)
            b = torch.randn(batch, 1, fan_out, generator=g, dtype=x.dtype)
            a = torch.bmm(a, w) / math.sqrt(fan_in) + bias_std * b
            if layer < depth - 1:
                a = activation(a)
            fan_in = fan_out
        outs.append(a[..., 0])
    return torch.cat(outs)


def test_squared_relu_networks_match_their_kernels_by_monte_carlo():
    """tn.mlp(3, RectifiedMonomial(2)): the outputs' second moments over 2,000 random networks of
    width 128 (Proposition 1), and the empirical NTK averaged over 12 networks of width 512
    (Theorem 1), each within 4.5 standard errors computed from the samples (a false alarm about
    1 in 150,000 per entry) plus the O(1/width) finite-width bias, allowed as 3/width relative
    (squared ReLUs have heavier tails than ReLU's 2/width of tests/test_monte_carlo.py)."""
    act = tn.RectifiedMonomial(2)
    x = _inputs(5, 4, 1)
    x[4] = -x[0]                                                    # an antipodal pair
    spec = tn.mlp(3, act, bias_std=0.3)
    nngp, ntk = spec.kernels(x)

    f = _sample_outputs(x, 3, 128, 2000, act, 0.3, seed=2)
    second = f.T @ f / f.shape[0]
    stderr = (f[:, :, None] * f[:, None, :]).std(dim=0) / math.sqrt(f.shape[0])
    assert ((second - nngp).abs() <= 4.5 * stderr + 3 / 128 * nngp.abs()).all()

    width = 512
    samples = torch.stack([tn.empirical_ntk(spec.network(width=width, seed=s, dtype=torch.float64), x)[:, :, 0, 0]
                           for s in range(12)])
    mean, stderr = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    assert ((mean - ntk).abs() <= 4.5 * stderr + 3 / width * ntk.abs()).all()
    # The check has power: the same samples reject the ReLU kernel (a different activation).
    assert not ((mean - tn.mlp(3, "relu", bias_std=0.3).ntk(x)).abs() <= 4.5 * stderr + 3 / width * ntk.abs()).all()
