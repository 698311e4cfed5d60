"""Finite networks in the NTK parameterisation (torchntk.networks), as a specification."""

import math

import numpy as np
import pytest
import torch

import torchntk as tn
from torchntk.networks import NTKDense, NTKNetwork, build_network


def _x(n=5, d=3, dtype=torch.float64, seed=0):
    return torch.randn(n, d, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _reference_forward(net, x):
    """The recursion of docs/conventions.md written out from the raw parameters."""
    a, pre, post = x, [], []
    for index, layer in enumerate(net.dense):
        n_in = layer.weight.shape[1]
        z = layer.weight_std / math.sqrt(n_in) * a @ layer.weight.T + layer.bias_std * layer.bias
        if index == len(net.dense) - 1:
            return z, pre, post
        a = net.activations[index](z)
        pre.append(z)
        post.append(a)


# -- shapes and the forward ------------------------------------------------------------


@pytest.mark.parametrize("depth, activation", [(1, "relu"), (2, "erf"), (4, "tanh")])
def test_forward_follows_the_ntk_parameterisation(depth, activation):
    spec = tn.mlp(depth, activation, bias_std=0.3, weight_std=1.5)
    net = spec.network(width=[6, 7, 8][: depth - 1], out_features=2, seed=3, dtype=torch.float64)
    x = _x()
    y, hidden = net(x, return_hidden=True)
    want, pre, post = _reference_forward(net, x)
    # Same operations in a different order (addmm vs scaled product): float64 round-off only.
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
    assert y.shape == (5, 2)
    assert len(hidden["preactivations"]) == len(hidden["activations"]) == depth - 1
    for got, ref in zip(hidden["preactivations"] + hidden["activations"], pre + post, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    assert net.widths == (3, *[6, 7, 8][: depth - 1], 2)
    assert torch.equal(net(x), y)


def test_interface_attributes():
    spec = tn.mlp(3, "relu", bias_std=0.1)
    net = spec.network(width=16, out_features=4, seed=0, in_features=5)
    assert isinstance(net, NTKNetwork) and isinstance(net.dense, tuple)
    assert all(isinstance(layer, NTKDense) for layer in net.dense) and len(net.dense) == 3
    assert net.activations == spec.activations
    assert net.widths == (5, 16, 16, 4)
    first = net.dense[0]
    assert first.weight.shape == (16, 5) and first.bias.shape == (16,)
    assert (first.weight_std, first.bias_std, first.fan_in, first.parameterization) == (1.0, 0.1, 5, "ntk")
    assert net.dense[0].weight.dtype == torch.float32  # the default dtype for networks
    assert len(list(net.parameters())) == 6


def test_parameters_are_standard_normal():
    net = tn.mlp(2, "relu").network(width=1000, out_features=1000, seed=0, in_features=1000, dtype=torch.float64)
    w = net.dense[1].weight.detach()
    # 10^6 iid N(0, 1) draws: the mean has sd 1e-3 and the variance sd sqrt(2) * 1e-3; 5 sd each.
    assert abs(float(w.mean())) < 5e-3
    assert abs(float(w.var()) - 1.0) < 5 * math.sqrt(2) * 1e-3
    # the fourth moment of N(0, 1) is 3 (sd of the estimate sqrt(96 / 10^6) ~ 0.01)
    assert abs(float((w**4).mean()) - 3.0) < 0.05


# -- reproducibility -------------------------------------------------------------------


def test_same_seed_same_network_in_any_dtype():
    spec = tn.mlp(3, "erf")
    a = spec.network(width=8, out_features=2, seed=7, in_features=3, dtype=torch.float64)
    b = spec.network(width=8, out_features=2, seed=7, in_features=3, dtype=torch.float64)
    c = spec.network(width=8, out_features=2, seed=7, in_features=3, dtype=torch.float32, device="cpu")
    d = spec.network(width=8, out_features=2, seed=8, in_features=3, dtype=torch.float64)
    for la, lb, lc, ld in zip(a.dense, b.dense, c.dense, d.dense, strict=True):
        assert torch.equal(la.weight, lb.weight) and torch.equal(la.bias, lb.bias)
        assert torch.equal(la.weight.float(), lc.weight)  # drawn in float64, then cast
        assert not torch.equal(la.weight, ld.weight)


def test_lazy_input_size_gives_the_same_weights():
    spec = tn.mlp(3, "relu")
    lazy = spec.network(width=8, out_features=1, seed=2, dtype=torch.float64)
    assert lazy.widths == (None, 8, 8, 1)
    optimizer = torch.optim.SGD(lazy.parameters(), lr=0.1)  # made before the weights exist
    eager = spec.network(width=8, out_features=1, seed=2, dtype=torch.float64, in_features=3)
    x = _x()
    assert torch.equal(lazy(x), eager(x))
    assert lazy.widths == (3, 8, 8, 1)
    lazy(x).sum().backward()
    before = lazy.dense[0].weight.detach().clone()
    optimizer.step()  # the optimiser holds the materialised parameters themselves
    assert not torch.equal(before, lazy.dense[0].weight)


def test_each_layer_has_its_own_stream():
    spec = tn.mlp(3, "relu")
    a = spec.network(width=[8, 5], seed=4, in_features=3)
    b = spec.network(width=[8, 9], seed=4, in_features=3)
    assert torch.equal(a.dense[0].weight, b.dense[0].weight)  # layer 1 ignores later widths


def test_state_dict_round_trip_into_a_lazy_network():
    spec = tn.mlp(2, "tanh")
    source = spec.network(width=6, out_features=2, seed=0, in_features=3, dtype=torch.float64)
    target = spec.network(width=6, out_features=2, seed=1, dtype=torch.float64)
    target.load_state_dict(source.state_dict())
    x = _x()
    assert torch.equal(target(x), source(x)) and target.widths == (3, 6, 2)


# -- the standard parameterisation -----------------------------------------------------


def test_standard_parameterisation_same_function_other_gradients():
    spec = tn.mlp(3, "relu", bias_std=0.2, weight_std=1.3)
    ntk = spec.network(width=[7, 9], out_features=1, seed=5, in_features=4, dtype=torch.float64)
    standard = tn.mlp(3, "relu", bias_std=0.2, weight_std=1.3, parameterization="standard")
    std = standard.network(width=[7, 9], out_features=1, seed=5, in_features=4, dtype=torch.float64)
    x = _x(d=4)
    torch.testing.assert_close(std(x), ntk(x), rtol=1e-12, atol=1e-12)  # same draws, rescaled
    ntk(x).sum().backward()
    std(x).sum().backward()
    for ln, ls in zip(ntk.dense, std.dense, strict=True):
        c = ln.weight_std / math.sqrt(ln.fan_in)
        torch.testing.assert_close(ls.weight, c * ln.weight, rtol=1e-14, atol=0)
        # W_std = c W_ntk, so d f / d W_ntk = c d f / d W_std (the chain rule)
        torch.testing.assert_close(ln.weight.grad, c * ls.weight.grad, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(ln.bias.grad, ln.bias_std * ls.bias.grad, rtol=1e-12, atol=1e-14)


# -- bad input -------------------------------------------------------------------------


def test_width_list_must_match_the_hidden_layers():
    spec = tn.mlp(4, "relu")
    with pytest.raises(ValueError, match="3 hidden weighted layer"):
        spec.network(width=[8, 8])
    with pytest.raises(ValueError, match="positive"):
        spec.network(width=0)
    with pytest.raises(TypeError, match="width"):
        spec.network(width="wide")
    assert tn.mlp(1).network(width=[], in_features=2).widths == (2, 1)  # depth 1 has no hidden layer


@pytest.mark.parametrize("kwargs, error, match", [
    ({"out_features": 0}, ValueError, "out_features"),
    ({"seed": -1}, ValueError, "seed"),
    ({"parameterization": "standard"}, TypeError, "each weighted layer carries its own"),
    ({"activation": "relu"}, TypeError, "unexpected option"),
    ({"dtype": torch.float16}, TypeError, "dtype"),
    ({"in_features": 2.5}, TypeError, "in_features"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        tn.mlp(2).network(width=4, **kwargs)


def test_bad_spec():
    with pytest.raises(TypeError, match="network description"):
        build_network("mlp", 4)


def test_bad_inputs_say_what_to_do():
    net = tn.mlp(2).network(width=4, in_features=3, dtype=torch.float64)
    with pytest.raises(TypeError, match="torch.as_tensor"):
        net(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="reshape"):
        net(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="3 input features"):
        net(torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        net(torch.zeros(2, 3))


# -- Proposition 1 on real networks ------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_proposition1_outputs_are_independent_gps_with_the_nngp_covariance(activation):
    spec = tn.mlp(3, activation, bias_std=0.1)
    x = _x(8)
    k, seeds = 32, 40
    outputs = torch.stack([spec.network(width=256, out_features=k, seed=s, dtype=torch.float64)(x).detach()
                           for s in range(seeds)])  # (S, N, k)
    sigma = spec.nngp(x)
    # One covariance estimate per network, (1/k) sum_u f_u f_u^T (zero mean is known): the S
    # estimates are iid, so their spread gives the Monte Carlo sd of the mean honestly, including
    # the correlation between the k outputs of one network through its hidden layers.
    per_net = torch.einsum("sau,sbu->sab", outputs, outputs) / k
    mean, sd = per_net.mean(0), per_net.std(0) / math.sqrt(seeds)
    z = (mean - sigma) / sd
    # |E C - Sigma(L)| = O(1/width) ~ 0.4% is far below sd ~ 4%; 5 sd over 36 entries.
    assert float(z.abs().max()) < 5, z
    assert float((mean - sigma).norm() / sigma.norm()) < 0.1
    # Distinct output units are uncorrelated: E f_u(x) f_v(x') = 0 for u != v.
    cross = torch.einsum("sau,sbv->sabuv", outputs, outputs)
    off = ~torch.eye(k, dtype=torch.bool)
    per_net_cross = cross[..., off].mean(-1)  # (S, N, N), average over ordered pairs u != v
    z_cross = per_net_cross.mean(0) / (per_net_cross.std(0) / math.sqrt(seeds))
    assert float(z_cross.abs().max()) < 5, z_cross
