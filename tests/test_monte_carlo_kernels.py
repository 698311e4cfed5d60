"""Monte Carlo kernels (torchntk.monte_carlo_kernels): estimates within their error bars of exact
expectations, and error bars of the right size.

Two exact references: a network with one hidden layer (depth 2) has E[f f'] = Sigma(2) and
E[Theta] = Theta(2) exactly at every width (the read-out is linear in independent N(0, 1) weights),
so `spec.kernels` is unbiased there; and a one-layer CNN with global average pooling, whose
expectations are the arc-cosine kernels of its patches, computed here in closed form.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchntk as tn
from torchntk.monte_carlo import monte_carlo_kernels

F64 = torch.float64
Z_MAX = 4.5
"""|z| bound per entry: for a t statistic with >= 31 degrees of freedom P(|t| > 4.5) < 1e-4, so a
false alarm among the ~20 entries of a test is below 1 in 500 (and the seeds are fixed)."""


pytestmark = pytest.mark.usefixtures("one_thread")   # small tensors (tests/conftest.py)


def _x(n, d=3, seed=0):
    x = torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True) * math.sqrt(d)


def _z(estimate, stderr, exact):
    return (estimate - exact) / stderr


def test_depth_two_estimates_are_within_their_error_bars():
    spec = tn.mlp(2, "relu", bias_std=0.2)
    x1, x2 = _x(4), _x(3, seed=1)
    mc = monte_carlo_kernels(spec, x1, x2, width=64, n_samples=48, seed=0, out_features=2)
    nngp, ntk = spec.kernels(x1, x2)
    assert mc.nngp.shape == mc.ntk.shape == mc.nngp_stderr.shape == mc.ntk_stderr.shape == (4, 3)
    assert _z(mc.nngp, mc.nngp_stderr, nngp).abs().max() < Z_MAX
    assert _z(mc.ntk, mc.ntk_stderr, ntk).abs().max() < Z_MAX


def test_wide_deep_networks_approach_spec_kernels():
    """Depth 3 at width 512: within the error bars plus the O(1/width) finite-width bias (2/width relative)."""
    spec = tn.mlp(3, "erf", bias_std=0.3, weight_std=1.2)
    x = _x(5)
    mc = monte_carlo_kernels(spec, x, width=512, n_samples=32, seed=1)
    nngp, ntk = spec.kernels(x)
    assert ((mc.nngp - nngp).abs() <= Z_MAX * mc.nngp_stderr + 2 / 512 * nngp.abs()).all()
    assert ((mc.ntk - ntk).abs() <= Z_MAX * mc.ntk_stderr + 2 / 512 * ntk.abs()).all()
    # and the check has power: a 10% wrong kernel lies far outside
    assert not ((mc.ntk - 1.1 * ntk).abs() <= Z_MAX * mc.ntk_stderr + 2 / 512 * ntk.abs()).all()


def test_error_bars_are_right_over_repeated_seeds():
    """Over 40 seeds, the estimates' spread equals the standard errors they report (sd over seeds
    against the root mean square stderr, entry by entry), and their mean is the exact kernel."""
    spec = tn.mlp(2, "tanh", bias_std=0.3)
    x = _x(3, seed=4)
    exact = dict(zip(("nngp", "ntk"), spec.kernels(x), strict=True))
    rows, cols = torch.triu_indices(3, 3)
    runs = [monte_carlo_kernels(spec, x, width=8, n_samples=32, seed=100 + s) for s in range(40)]
    for name in ("nngp", "ntk"):
        estimates = torch.stack([getattr(r, name)[rows, cols] for r in runs])  # (40 seeds, 6 entries)
        stderr = torch.stack([getattr(r, f"{name}_stderr")[rows, cols] for r in runs])
        ratio = estimates.std(0) / stderr.pow(2).mean(0).sqrt()
        # The means of 32 draws are close to Gaussian, so a sd over 40 seeds is within ~11% (one sd)
        # of the truth: 0.65..1.4 is 3 sd for each of the 6 entries. Error bars off by 1.5x fail.
        assert ((ratio > 0.65) & (ratio < 1.4)).all(), (name, ratio)
        assert 0.8 < float(ratio.mean()) < 1.25, (name, ratio)  # pooled (correlated entries): ~2 sd
        z = (estimates.mean(0) - exact[name][rows, cols]) / (estimates.std(0) / math.sqrt(40))
        assert z.abs().max() < Z_MAX, (name, z)  # unbiased: the kernel is exact at depth 2


def test_same_seed_same_numbers_and_running_estimates():
    spec = tn.mlp(3, "relu", bias_std=0.1)
    x = _x(4)
    a = monte_carlo_kernels(spec, x, width=16, n_samples=6, seed=3)
    b = monte_carlo_kernels(spec, x, width=16, n_samples=6, seed=3)
    c = monte_carlo_kernels(spec, x, width=16, n_samples=6, seed=4)
    assert torch.equal(a.ntk, b.ntk) and torch.equal(a.nngp_stderr, b.nngp_stderr)
    assert not torch.equal(a.ntk, c.ntk)
    running = monte_carlo_kernels(spec, x, width=16, n_samples=[2, 4, 6], seed=3)
    assert [r.n_samples for r in running] == [2, 4, 6]
    # Welford's running mean and a fresh run add the same numbers in the same order.
    torch.testing.assert_close(running[-1].ntk, a.ntk, rtol=1e-15, atol=0)
    torch.testing.assert_close(running[0].nngp, monte_carlo_kernels(spec, x, width=16, n_samples=2, seed=3).nngp,
                               rtol=1e-15, atol=0)
    assert running[0].ntk_stderr.mean() > running[-1].ntk_stderr.mean()  # the bars shrink
    only = monte_carlo_kernels(spec, x, width=16, n_samples=6, seed=3, kernels="nngp")
    assert only.ntk is None and torch.equal(only.nngp, a.nngp)
    chunked = monte_carlo_kernels(spec, x, width=16, n_samples=6, seed=3, batch_size=1)  # bounded memory
    torch.testing.assert_close(chunked.ntk, a.ntk, rtol=1e-13, atol=1e-14)  # the same sums, regrouped
    torch.testing.assert_close(chunked.nngp, a.nngp, rtol=1e-13, atol=1e-14)
    out = monte_carlo_kernels(spec, x.numpy(), width=16, n_samples=2, seed=3, progress=True)
    assert isinstance(out.ntk, np.ndarray)


# -- a factory with no description: a CNN and its exact expectations -------------------------


CHANNELS, SIGMA = 12, 1.5


def cnn_factory():
    conv = nn.Conv2d(2, CHANNELS, 3, padding=1, bias=False)
    readout = nn.Linear(CHANNELS, 1, bias=False)
    with torch.no_grad():
        conv.weight.normal_(0, SIGMA / math.sqrt(2 * 9))
        readout.weight.normal_(0, 1 / math.sqrt(CHANNELS))
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), readout)


def _cnn_expectations(x1, x2):
    """E f(x) f(x') and E Theta(x, x') of `cnn_factory`'s networks, exactly.

    f = sum_c v_c g_c with g_c = mean_p relu(u_cp), u_cp = w_c . U_p(x), w_c ~ N(0, s^2 I), v_c ~ N(0, 1/C):
    E f f' = E g g' = (1/P^2) sum_pp' k1(p, p'), E Theta = C E g g' + (1/P^2) sum_pp' k0(p, p') U_p . U'_p'
    with the arc-cosine kernels k1 = sqrt(q q') (sin t + (pi - t) cos t) / (2 pi), k0 = (pi - t) / (2 pi)."""
    s2 = SIGMA**2 / (2 * 9)
    u1, u2 = F.unfold(x1, 3, padding=1), F.unfold(x2, 3, padding=1)  # (N, 18, P)
    dots = torch.einsum("afp,bfq->abpq", u1, u2)
    q1, q2 = (u1 * u1).sum(1) * s2, (u2 * u2).sum(1) * s2  # (N, P)
    cov = dots * s2
    norm = (q1[:, None, :, None] * q2[None, :, None, :]).sqrt()
    theta = torch.arccos((cov / norm).clamp(-1, 1))
    k1 = norm * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) / (2 * math.pi)
    k0 = (math.pi - theta) / (2 * math.pi)
    nngp = k1.mean((2, 3))
    return nngp, CHANNELS * nngp + (k0 * dots).mean((2, 3))


def test_a_cnn_factory_is_within_its_error_bars_of_the_exact_expectations():
    g = torch.Generator().manual_seed(5)
    x1, x2 = torch.randn(3, 2, 5, 5, generator=g, dtype=F64), torch.randn(2, 2, 5, 5, generator=g, dtype=F64)
    mc = monte_carlo_kernels(cnn_factory, x1, x2, n_samples=64, seed=0)
    nngp, ntk = _cnn_expectations(x1, x2)
    assert mc.width is None and mc.ntk.shape == (3, 2)
    assert _z(mc.nngp, mc.nngp_stderr, nngp).abs().max() < Z_MAX
    assert _z(mc.ntk, mc.ntk_stderr, ntk).abs().max() < Z_MAX
    assert not (_z(mc.ntk, mc.ntk_stderr, 1.15 * ntk).abs() < Z_MAX).all()  # power against a 15% error


def test_bad_input():
    spec = tn.mlp(2)
    x = _x(3)
    with pytest.raises(ValueError, match=">= 2"):
        monte_carlo_kernels(spec, x, n_samples=1)
    with pytest.raises(ValueError, match="increasing"):
        monte_carlo_kernels(spec, x, n_samples=[4, 2])
    with pytest.raises(TypeError, match="lambda"):
        monte_carlo_kernels(cnn_factory(), x)
    with pytest.raises(ValueError, match="kernels"):
        monte_carlo_kernels(spec, x, kernels="all")
    with pytest.raises(TypeError, match="nn.Module"):
        monte_carlo_kernels(lambda: 3, x, n_samples=2)
    assert tn.monte_carlo_kernels is monte_carlo_kernels
