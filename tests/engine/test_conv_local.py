"""ConvLocal, the locally connected layer: its finite module (unfold and one contraction, a filter
and a bias per output position) against a convolution where every position's filter is the same,
its kernels against Monte Carlo over finite networks (Proposition 1 for the NNGP; the mean
empirical NTK of linear networks, which equals the limit at any width), JSON and the argument
checks. The kernels against neural-tangents' stax.ConvLocal are in test_neural_tangents_layers.py
and test_standard_parameterization.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchntk as tn
from torchntk.engine.pointwise import as_layer
from torchntk.engine.state import input_state
from torchntk.networks import NTKConv, NTKConvLocal

F64 = torch.float64
X = torch.from_numpy(np.random.default_rng(7).standard_normal((4, 1, 5, 5)))


def _pair(padding: str, stride):
    args = dict(stride=stride, padding=padding, weight_std=1.3, bias_std=0.4, parameterization="ntk", seed=3,
                index=0, dtype=F64, device="cpu")
    return NTKConvLocal(2, 3, (3, 2), (6, 5), **args), NTKConv(2, 3, (3, 2), **args)


@pytest.mark.parametrize("padding, stride", [("valid", (1, 1)), ("same", (2, 1)), ("circular", (1, 2))])
def test_with_one_filter_everywhere_it_is_the_convolution(padding, stride):
    local, conv = _pair(padding, stride)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 2, 6, 5)))
    y = local(x)
    with torch.no_grad():
        out_shape = local.bias.shape[1:]
        local.weight.copy_(conv.weight[:, None, None].expand_as(local.weight))
        local.bias.copy_(conv.bias[:, None, None].expand(-1, *out_shape))
    # the same sums in another order (unfold + einsum against conv2d): round-off only
    torch.testing.assert_close(local(x), conv(x), rtol=1e-12, atol=1e-12)
    assert y.shape == conv(x).shape


def test_each_output_position_has_its_own_weights():
    local, _ = _pair("same", (1, 1))
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 2, 6, 5)))
    before = local(x)
    with torch.no_grad():
        local.weight[:, 2, 3] += 1.0
        local.bias[:, 4, 0] += 1.0
    changed = (local(x) - before).abs().amax(dim=(0, 1)) > 0
    expected = torch.zeros(6, 5, dtype=torch.bool)
    expected[2, 3] = expected[4, 0] = True
    assert torch.equal(changed, expected)


def test_the_finite_module_checks_its_positions():
    local, _ = _pair("valid", (1, 1))
    with pytest.raises(ValueError, match=r"built for inputs with positions \(6, 5\)"):
        local(torch.zeros(1, 2, 5, 5, dtype=F64))


def _deep():
    return tn.serial(tn.ConvLocal((3, 3), padding="same", bias_std=0.2), tn.ReLU(),
                     tn.ConvLocal((3, 2), stride=(2, 1), padding="circular"), tn.Erf(), tn.GlobalAvgPool(),
                     tn.Dense())


def _pooled():
    # ReLU of uncorrelated positions has correlated means: the pooling reads the filled-in full layout
    return tn.serial(tn.ConvLocal((2, 2)), tn.ReLU(), tn.AvgPool(2, stride=1), tn.Conv((2, 2)), tn.ReLU(),
                     tn.Flatten(), tn.Dense())


@pytest.mark.parametrize("make", [_deep, _pooled], ids=["deep", "pooled"])
def test_proposition_1_outputs_have_the_nngp_covariance(make):
    spec, seeds, out = make(), 100, 16
    per_network = []
    for seed in range(seeds):
        f = spec.network(width=96, out_features=out, seed=seed, dtype=F64, input_shape=(1, 5, 5))(X)
        per_network.append((f @ f.T / out).detach())
    per_network = torch.stack(per_network)
    mean, stderr = per_network.mean(0), per_network.std(0) / seeds ** 0.5
    nngp = spec.nngp(X)
    # 10 distinct entries; |z| < 4.5 fails by chance with probability ~1e-4 if the kernel is right;
    # the finite-width bias at 96 channels, O(1/96), sits inside the ~3% error bars
    assert ((mean - nngp) / stderr).abs().max() < 4.5
    # power: a kernel 20% off is rejected by the same test
    assert ((mean - 1.2 * nngp) / stderr).abs().max() > 4.5


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_mean_empirical_ntk_of_a_linear_network_is_the_kernel(parameterization):
    # no nonlinearity: every layer's gradient is a product of independent Gaussian factors, so the
    # empirical NTK's expectation over initialisations is the limit kernel at any width
    p = dict(parameterization=parameterization)
    spec = tn.serial(tn.ConvLocal((2, 2), padding="same", width=6, **p),
                     tn.ConvLocal((3, 3), stride=2, padding="circular", width=6, **p), tn.GlobalAvgPool(),
                     tn.Dense(width=1, **p))
    seeds = 200
    kernels = torch.stack([tn.empirical_ntk(spec.network(seed=s, dtype=F64, input_shape=(1, 5, 5)), X,
                                            outputs="trace", method="jacobian") for s in range(seeds)])
    mean, stderr = kernels.mean(0), kernels.std(0) / seeds ** 0.5
    ntk = spec.ntk(X)
    # 10 distinct entries, |z| < 4.5 (chance failure ~1e-4); power: 20% off is rejected
    assert ((mean - ntk) / stderr).abs().max() < 4.5
    assert ((mean - 1.2 * ntk) / stderr).abs().max() > 4.5


def test_empirical_ntk_by_products_agrees_with_the_jacobian():
    net = _deep().network(width=8, out_features=2, seed=0, dtype=F64, input_shape=(1, 5, 5))
    # exact computations of the same sums of products: round-off only
    torch.testing.assert_close(tn.empirical_ntk(net, X, method="ntk_vp"), tn.empirical_ntk(net, X, method="jacobian"),
                               rtol=1e-12, atol=1e-13)
    assert len(net.weighted) == 3 and isinstance(net.weighted[0], NTKConvLocal)


def test_covariances_between_positions_vanish_and_the_diagonal_is_convs():
    state = input_state(X[:2], None, need_ntk=True, full=True)
    for layer in (tn.Conv((2, 2)), as_layer(tn.ReLU())):
        state = layer.kernel(state, True)
    full = tn.ConvLocal((3, 3), padding="same").kernel(state.copy(), True)
    shared = tn.Conv((3, 3), padding="same").kernel(state.copy(), False)
    for ours, conv in ((full.nngp, shared.nngp), (full.ntk, shared.ntk)):
        diag = torch.diagonal(torch.diagonal(ours, dim1=2, dim2=3), dim1=2, dim2=3)
        assert torch.equal(diag, conv)   # the same map on the positions' diagonal
        assert torch.count_nonzero(ours) == torch.count_nonzero(diag)


def test_json_round_trip_repr_and_network():
    spec = tn.serial(tn.ConvLocal((3, 2), stride=(2, 1), padding="circular", bias_std=0.3, weight_std=1.1,
                                  parameterization="standard", width=5), tn.ReLU(), tn.Flatten(), tn.Dense())
    data = spec.to_dict()
    back = tn.from_dict(data)
    assert back.to_dict() == data and repr(back) == repr(spec)
    assert "ConvLocal((3, 2), stride=(2, 1), padding='circular'" in repr(spec)
    for a, b in zip(spec.kernels(X), back.kernels(X), strict=True):
        assert torch.equal(a, b)
    same = [spec.network(seed=2, dtype=F64, input_shape=(1, 5, 5))(X) for _ in range(2)]
    assert torch.equal(*same)


@pytest.mark.parametrize("make, error, match", [
    (lambda: tn.ConvLocal((3, 3), 8), TypeError, r"ConvLocal\(filter_shape, width=\(3, 3\)\)"),
    (lambda: tn.ConvLocal(3, parameterization="mup"), ValueError, "ConvLocal: parameterization must be one of"),
    (lambda: tn.ConvLocal(3, width=0), ValueError, "ConvLocal: width must be a positive integer"),
])
def test_bad_options_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_inputs_are_refused_naming_the_layer():
    with pytest.raises(tn.ArchitectureError, match=r"layer 1 \(ConvLocal.*needs inputs with positions"):
        tn.serial(tn.Dense(), tn.ConvLocal(3), tn.Dense()).nngp(torch.ones(2, 3, dtype=F64))
    with pytest.raises(tn.ArchitectureError, match=r"layer 0 \(ConvLocal.*larger than the input"):
        tn.serial(tn.ConvLocal((6, 6)), tn.Flatten(), tn.Dense()).nngp(X)
    with pytest.raises(tn.ArchitectureError, match=r"ConvLocal.*padding must be one of"):
        tn.serial(tn.ConvLocal(3, padding="full"), tn.Flatten(), tn.Dense()).nngp(X)
    with pytest.raises(tn.ArchitectureError, match=r"ConvLocal.*bias_std"):
        tn.serial(tn.ConvLocal(3, bias_std=-1.0), tn.Flatten(), tn.Dense()).nngp(X)
