"""The empirical NTK (torchntk.empirical), as a specification.

Theta_kk'(x, x') = sum_p d f_k(x) / d theta_p * d f_k'(x') / d theta_p over trainable parameters.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

import torchntk as tn
from torchntk.empirical import empirical_ntk

METHODS = ("structured", "jacobian", "ntk_vp")
F64 = torch.float64


def _x(n, d=3, seed=0):
    return torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _brute_force(model, x1, x2):
    """J J^T from one torch.autograd.grad call per sample and output (loops: a reference only)."""
    params = [p for p in model.parameters() if p.requires_grad]

    def jacobian(x):
        rows = []
        for i in range(x.shape[0]):
            out = model(x[i : i + 1])[0]
            rows.append(torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[k], params,
                                                                                     retain_graph=True)])
                                     for k in range(out.shape[0])]))
        return torch.stack(rows)  # (N, k, P)

    return torch.einsum("akp,blp->abkl", jacobian(x1), jacobian(x2))


# -- exactness: every method, against brute force and each other ---------------------------


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_all_methods_equal_brute_force(parameterization):
    spec = tn.mlp(3, "tanh", bias_std=0.4, weight_std=1.2, parameterization=parameterization)
    net = spec.network(width=[4, 3], out_features=2, seed=1, dtype=F64, in_features=3)
    x1, x2 = _x(4), _x(3, seed=1)
    want = _brute_force(net, x1, x2)
    want_sym = _brute_force(net, x1, x1)
    for method in METHODS:
        # The same sums of products in another order: float64 round-off, ~1e-16 relative.
        torch.testing.assert_close(empirical_ntk(net, x1, x2, method=method), want, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(empirical_ntk(net, x1, method=method, batch_size=3), want_sym,
                                   rtol=1e-12, atol=1e-13)
        trace = empirical_ntk(net, x1, x2, method=method, outputs="trace")
        torch.testing.assert_close(trace, want.diagonal(dim1=2, dim2=3).mean(-1), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("depth, activation, k, bias_std", [
    (1, "relu", 1, 0.1), (2, "relu", 3, 0.0), (3, "erf", 1, 0.5), (4, "tanh", 2, 0.1),
    (3, "gelu", 4, 0.2), (3, "leaky_relu", 2, 0.1), (4, "sin", 1, 0.3),
])
def test_methods_agree(depth, activation, k, bias_std):
    spec = tn.mlp(depth, activation, bias_std=bias_std)
    net = spec.network(width=[9, 6, 7][: depth - 1], out_features=k, seed=depth, dtype=F64)
    x1, x2 = _x(7, d=5), _x(5, d=5, seed=1)
    for x_other in (None, x2):
        for outputs in ("full", "trace"):
            ref = empirical_ntk(net, x1, x_other, method="jacobian", outputs=outputs)
            scale = ref.abs().max()
            for method in ("structured", "ntk_vp", "auto"):
                got = empirical_ntk(net, x1, x_other, method=method, outputs=outputs, batch_size=3)
                # float64 round-off of sums over ~10^2 parameters: 1e-12 relative is ~100 ulp of margin.
                assert float((got - ref).abs().max() / scale) < 1e-12, (method, outputs, x_other is None)


def test_sequential_of_linear_layers_is_structured():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 5, bias=False), nn.GELU(), nn.Sigmoid(),
                          nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 2)), nn.Softplus()).double()
    model[0].weight.requires_grad_(False)  # a frozen tensor does not count in the sum over p
    x1, x2 = _x(5), _x(4, seed=2)
    want = _brute_force(model, x1, x2)
    for method in ("structured", "jacobian"):
        torch.testing.assert_close(empirical_ntk(model, x1, x2, method=method), want, rtol=1e-12, atol=1e-13)


def test_any_module_through_torch_func():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(6, 2)).double()
    x1, x2 = torch.randn(3, 1, 5, dtype=F64), torch.randn(2, 1, 5, dtype=F64)
    want = _brute_force(model, x1, x2)
    for method in ("jacobian", "ntk_vp", "auto", "structured"):  # structured: tests/test_empirical_conv.py
        torch.testing.assert_close(empirical_ntk(model, x1, x2, method=method), want, rtol=1e-12, atol=1e-13)
    pooled = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Tanh(), nn.AvgPool1d(3), nn.Flatten(), nn.Linear(2, 2)).double()
    want = _brute_force(pooled, x1, x2)
    for method in ("jacobian", "ntk_vp", "auto"):
        torch.testing.assert_close(empirical_ntk(pooled, x1, x2, method=method), want, rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError, match="method='jacobian'"):
        empirical_ntk(pooled, x1, method="structured")


# -- any output shape, diagonals, the outputs' outer products -----------------------------


@pytest.mark.parametrize("method", METHODS)
def test_one_dimensional_outputs_give_a_matrix(method):
    net = tn.mlp(3, "tanh", bias_std=0.2).network(width=6, out_features=1, seed=0, dtype=F64, in_features=3)
    flat = nn.Sequential(net, nn.Flatten(0))  # outputs (N,)
    x1, x2 = _x(5), _x(4, seed=1)
    want = _brute_force(net, x1, x2)[:, :, 0, 0]
    for outputs in ("full", "trace"):
        got = empirical_ntk(flat, x1, x2, method="auto" if method == "structured" else method, outputs=outputs)
        assert got.shape == (5, 4)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)  # float64 round-off
    diag = empirical_ntk(flat, x1, diagonal=True, method="auto" if method == "structured" else method)
    torch.testing.assert_close(diag, _brute_force(net, x1, x1)[:, :, 0, 0].diagonal(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("method", METHODS)
def test_diagonal_is_the_kernels_diagonal(method):
    net = tn.mlp(3, "gelu", bias_std=0.3).network(width=7, out_features=3, seed=2, dtype=F64, in_features=3)
    x1, x2 = _x(7), _x(7, seed=5)
    for x_other in (None, x2):
        full = empirical_ntk(net, x1, x_other, method="jacobian")
        want = full.diagonal(dim1=0, dim2=1).permute(2, 0, 1)  # (N, k, k)
        got = empirical_ntk(net, x1, x_other, method=method, diagonal=True, batch_size=3)
        assert got.shape == (7, 3, 3)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)  # float64 round-off
        trace = empirical_ntk(net, x1, x_other, method=method, diagonal=True, outputs="trace", batch_size=3)
        torch.testing.assert_close(trace, want.diagonal(dim1=1, dim2=2).mean(-1), rtol=1e-12, atol=1e-13)


def test_diagonal_costs_linear_time():
    """Features are computed once per chunk and each row is paired with itself only: doubling N
    doubles the number of feature calls (a full kernel's blocks would quadruple)."""
    from torchntk.empirical import structured

    calls = []
    original = structured.StructuredMethod.features

    def counting(self, x):
        calls.append(x.shape[0])
        return original(self, x)

    net = tn.mlp(2, "relu").network(width=5, out_features=2, seed=0, dtype=F64, in_features=3)
    structured.StructuredMethod.features = counting
    try:
        for n in (8, 16):
            empirical_ntk(net, _x(n), diagonal=True, batch_size=4)
    finally:
        structured.StructuredMethod.features = original
    assert calls == [4] * 2 + [4] * 4


def test_empirical_nngp_is_the_outputs_outer_product():
    from torchntk.empirical import empirical_nngp

    net = tn.mlp(3, "relu", bias_std=0.1).network(width=8, out_features=2, seed=0, dtype=F64, in_features=3)
    x1, x2 = _x(5), _x(3, seed=1)
    f1, f2 = net(x1).detach(), net(x2).detach()
    torch.testing.assert_close(empirical_nngp(net, x1, x2), torch.einsum("ik,jl->ijkl", f1, f2), rtol=0, atol=0)
    torch.testing.assert_close(empirical_nngp(net, x1, x2, outputs="trace", batch_size=2), f1 @ f2.T / 2,
                               rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(empirical_nngp(net, x1, diagonal=True, outputs="trace"), (f1 * f1).mean(1),
                               rtol=1e-15, atol=1e-15)
    flat = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)).double()
    f = flat(x1).detach()
    torch.testing.assert_close(empirical_nngp(flat, x1), torch.outer(f, f), rtol=0, atol=0)
    assert isinstance(empirical_nngp(net, x1.numpy()), np.ndarray)
    assert tn.empirical_nngp is empirical_nngp


# -- properties ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_symmetric_exactly_and_blocks_of_the_joint_kernel(method):
    net = tn.mlp(3, "relu", bias_std=0.2).network(width=8, out_features=3, seed=0, dtype=F64)
    x1, x2 = _x(5), _x(4, seed=3)
    full = empirical_ntk(net, torch.cat([x1, x2]), method=method, batch_size=2)
    assert torch.equal(full, full.permute(1, 0, 3, 2))  # exactly, not to round-off
    trace = empirical_ntk(net, x1, method=method, outputs="trace", batch_size=2)
    assert torch.equal(trace, trace.T)
    cross = empirical_ntk(net, x1, x2, method=method, batch_size=3)
    torch.testing.assert_close(cross, full[:5, 5:], rtol=1e-13, atol=1e-14)  # round-off only
    # positive semi-definite: J J^T as an (N k) x (N k) matrix
    gram = full.permute(0, 2, 1, 3).reshape(27, 27)
    assert float(torch.linalg.eigvalsh(gram).min()) > -1e-12 * float(gram.diagonal().max())


@pytest.mark.parametrize("cache_bytes", [1 << 30, 1])  # 1 byte: every panel holds a single chunk
def test_batch_size_and_panels_do_not_change_the_result(monkeypatch, cache_bytes):
    monkeypatch.setattr("torchntk.empirical.CACHE_BYTES", cache_bytes)
    net = tn.mlp(2, "erf").network(width=6, out_features=2, seed=0, dtype=F64)
    x, x2 = _x(7), _x(5, seed=4)
    ref, ref2 = empirical_ntk(net, x, batch_size=7), empirical_ntk(net, x, x2, batch_size=7)
    for b in (1, 2, 3, 100):
        for method in ("structured", "jacobian"):
            # chunks only regroup the same products: round-off
            torch.testing.assert_close(empirical_ntk(net, x, batch_size=b, method=method), ref, rtol=1e-13, atol=1e-14)
            torch.testing.assert_close(empirical_ntk(net, x, x2, batch_size=b, method=method), ref2,
                                       rtol=1e-13, atol=1e-14)


def test_float32_numpy_and_lazy_networks():
    net = tn.mlp(3, "relu").network(width=16, out_features=2, seed=0)  # float32, input size not yet known
    x = np.random.default_rng(0).standard_normal((6, 4))
    got = empirical_ntk(net, x)  # numpy in (any float dtype): converted to the model's, numpy out
    assert isinstance(got, np.ndarray) and got.shape == (6, 6, 2, 2) and got.dtype == np.float32
    ref = empirical_ntk(net.double(), torch.from_numpy(x), method="jacobian").numpy()
    # float32 against float64: ~1e-7 relative per product, sums of ~10^3 terms
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


# -- Theorem 1 and its rate, on real networks ------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_theorem1_mean_converges_and_spread_shrinks_like_inverse_sqrt_width(activation):
    spec = tn.mlp(3, activation, bias_std=0.1)
    x = _x(10)
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(3)  # on the sphere of radius sqrt(n0)
    k, seeds, widths = 2, 12, (64, 256, 1024)
    limit = tn.expand_outputs(spec.ntk(x), k)  # Theta(L) (x) Id_k
    scale = limit.norm()
    log_spread, log_spread_var = [], []
    for width in widths:
        draws = torch.stack([empirical_ntk(spec.network(width=width, out_features=k, seed=s, dtype=F64), x)
                             for s in range(seeds)])
        d2 = ((draws - limit) ** 2).sum((1, 2, 3, 4)) / scale**2  # squared relative distance per seed
        spread2 = d2.mean()
        log_spread.append(0.5 * math.log(spread2))
        # delta method: sd of log sqrt(mean d2) is (1/2) sd(d2) / (mean d2 sqrt(S))
        log_spread_var.append(float((0.5 * d2.std() / (spread2 * math.sqrt(seeds))) ** 2))
        if width == widths[-1]:
            mean_error = float((draws.mean(0) - limit).norm() / scale)
            # E |mean - E T|^2 = spread^2 / S for S iid seeds, and |E T - limit| = O(1/width) is far
            # smaller: the error of the mean must be of the Monte Carlo size (3x allows its spread).
            assert mean_error < 3 * math.sqrt(float(spread2) / seeds), (mean_error, float(spread2))
            assert mean_error < 0.1  # and small in absolute terms at width 1024
    u = torch.tensor([math.log(w) for w in widths], dtype=F64)
    u = u - u.mean()
    slope = float((u * torch.tensor(log_spread, dtype=F64)).sum() / (u * u).sum())
    slope_sd = math.sqrt(float((u * u * torch.tensor(log_spread_var, dtype=F64)).sum())) / float((u * u).sum())
    # Theorem 1's convergence, at the central-limit rate width^-1/2: slope -1/2 within 4 Monte Carlo
    # sd, plus 0.1 for the O(1/width) corrections to the leading term at width 64.
    assert abs(slope + 0.5) < 4 * slope_sd + 0.1, (slope, slope_sd)
    assert slope_sd < 0.1  # the check has power: slopes 0 (no convergence) and -1 lie outside


# -- bad input ------------------------------------------------------------------------------


def test_bad_inputs_say_what_to_do():
    net = tn.mlp(2, "relu").network(width=4, in_features=3, dtype=F64)
    x = _x(3)
    with pytest.raises(TypeError, match=r"x1.to\(torch.float64\)"):
        empirical_ntk(net, x.float())
    with pytest.raises(ValueError, match="same shape per input"):
        empirical_ntk(net, x, _x(2, d=4))
    with pytest.raises(ValueError, match="method must be one of"):
        empirical_ntk(net, x, method="fast")
    with pytest.raises(ValueError, match="outputs must be"):
        empirical_ntk(net, x, outputs="diagonal")
    with pytest.raises(ValueError, match="batch_size"):
        empirical_ntk(net, x, batch_size=0)
    with pytest.raises(TypeError, match="nn.Module"):
        empirical_ntk(lambda t: t, x)
    with pytest.raises(ValueError, match="NaN"):
        empirical_ntk(net, torch.full((2, 3), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match=r"flatten\(1\)"):
        empirical_ntk(nn.Sequential(nn.Linear(3, 4), nn.Unflatten(1, (2, 2))).double(), x)
    with pytest.raises(ValueError, match="as many rows"):
        empirical_ntk(net, x, _x(2), diagonal=True)
    with pytest.raises(ValueError, match=r"shape \(N, n0\)"):
        empirical_ntk(net, x[0])
    frozen = tn.mlp(2).network(width=4, in_features=3, dtype=F64).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        empirical_ntk(frozen, x)


def test_wrong_device_is_reported():
    net = tn.mlp(2).network(width=4, in_features=3, device="meta")
    with pytest.raises(ValueError, match="to\\('meta'\\)"):
        empirical_ntk(net, torch.zeros(2, 3))
