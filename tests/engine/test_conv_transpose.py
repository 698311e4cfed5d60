"""ConvTranspose: its finite module against torch's conv_transpose (the same dilate, pad and
convolve, cropped to jax.lax.conv_transpose's paddings), its kernels against Monte Carlo over
finite networks (Proposition 1; the mean empirical NTK of a linear network, which equals the
limit at any width), JSON and the argument checks. The kernels against neural-tangents'
stax.ConvTranspose are in test_neural_tangents_layers.py and test_standard_parameterization.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torchntk as tn
from torchntk.empirical import StructuredFallbackWarning
from torchntk.engine.local import transpose_padding
from torchntk.networks import NTKConvTranspose

F64 = torch.float64
X = torch.from_numpy(np.random.default_rng(5).standard_normal((4, 1, 4, 3)))


@pytest.mark.parametrize("window, stride, padding", [((3, 3), (2, 2), "valid"), ((3, 2), (2, 1), "same"),
                                                     ((2, 1), (3, 2), "valid"), ((2, 3), (3, 1), "same")])
def test_finite_module_is_torchs_transposed_convolution(window, stride, padding):
    pads = tuple(transpose_padding(k, s, padding) for k, s in zip(window, stride, strict=True))
    layer = NTKConvTranspose(2, 3, window, stride=stride, pads=pads, weight_std=1.2, bias_std=0.3,
                             parameterization="ntk", seed=0, index=0, dtype=F64, device="cpu")
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 2, 4, 3)))
    # torch's conv_transpose2d is the full correlation of the dilated input with the flipped
    # filter, (n - 1) s + k positions: place it inside lax's padding (k - 1 before is no crop)
    w = layer.weight * layer.weight_scale
    full = F.conv_transpose2d(x, w.flip(2, 3).transpose(0, 1), stride=stride)
    expected = full
    for axis, (k, (before, after)) in enumerate(zip(window, pads, strict=True)):
        dim = 2 + axis
        low = k - 1 - before                  # >= 0: positions of the full output to drop at the start
        size = (x.shape[dim] - 1) * stride[axis] + 1 + before + after - k + 1
        expected = F.pad(expected.movedim(dim, -1), (0, max(0, low + size - expected.shape[dim]))).movedim(-1, dim)
        expected = expected.narrow(dim, low, size)
    expected = expected + (layer.bias * layer.bias_scale)[:, None, None]
    # two float64 computations of the same sums: round-off only
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def _net():
    return tn.serial(tn.ConvTranspose((3, 2), stride=2, padding="same", bias_std=0.2), tn.ReLU(),
                     tn.ConvTranspose((2, 2), stride=(1, 3)), tn.Erf(), tn.AvgPool(2), tn.Flatten(), tn.Dense())


def test_proposition_1_outputs_have_the_nngp_covariance():
    spec, seeds, out = _net(), 100, 16
    per_network = []
    for seed in range(seeds):
        f = spec.network(width=64, out_features=out, seed=seed, dtype=F64, input_shape=(1, 4, 3))(X)
        per_network.append((f @ f.T / out).detach())
    per_network = torch.stack(per_network)
    mean, stderr = per_network.mean(0), per_network.std(0) / seeds ** 0.5
    nngp = spec.nngp(X)
    # 10 distinct entries; |z| < 4.5 fails by chance with probability ~1e-4 if the kernel is right;
    # the finite-width bias at 64 channels, O(1/64), sits inside the ~3% error bars
    assert ((mean - nngp) / stderr).abs().max() < 4.5
    # power: a kernel 20% off is rejected by the same test
    assert ((mean - 1.2 * nngp) / stderr).abs().max() > 4.5


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_mean_empirical_ntk_of_a_linear_network_is_the_kernel(parameterization):
    # no nonlinearity: the empirical NTK's expectation over initialisations is the limit at any width
    p = dict(parameterization=parameterization)
    spec = tn.serial(tn.ConvTranspose((2, 2), stride=2, width=6, **p),
                     tn.ConvTranspose((3, 1), padding="same", width=6, **p), tn.GlobalAvgPool(),
                     tn.Dense(width=1, **p))
    seeds = 200
    kernels = torch.stack([tn.empirical_ntk(spec.network(seed=s, dtype=F64, input_shape=(1, 4, 3)), X,
                                            outputs="trace", method="jacobian") for s in range(seeds)])
    mean, stderr = kernels.mean(0), kernels.std(0) / seeds ** 0.5
    ntk = spec.ntk(X)
    # 10 distinct entries, |z| < 4.5 (chance failure ~1e-4); power: 20% off is rejected
    assert ((mean - ntk) / stderr).abs().max() < 4.5
    assert ((mean - 1.2 * ntk) / stderr).abs().max() > 4.5


def test_the_structured_empirical_ntk_does_not_read_it_as_a_convolution():
    net = _net().network(width=6, out_features=2, seed=0, dtype=F64, input_shape=(1, 4, 3))
    with pytest.warns(StructuredFallbackWarning, match="NTKConvTranspose"):
        auto = tn.empirical_ntk(net, X)
    # the fallback is the Jacobian itself: equal
    assert torch.equal(auto, tn.empirical_ntk(net, X, method="jacobian"))


def test_json_round_trip_and_repr():
    spec = _net()
    back = tn.from_dict(spec.to_dict())
    assert back.to_dict() == spec.to_dict() and repr(back) == repr(spec)
    assert "ConvTranspose((3, 2), stride=2, padding='same'" in repr(spec)
    for a, b in zip(spec.kernels(X), back.kernels(X), strict=True):
        assert torch.equal(a, b)


def test_bad_arguments_are_refused_naming_the_layer():
    with pytest.raises(tn.ArchitectureError, match=r"layer 0 \(ConvTranspose.*no circular padding"):
        tn.serial(tn.ConvTranspose(2, padding="circular"), tn.Flatten(), tn.Dense()).nngp(X)
    with pytest.raises(tn.ArchitectureError, match=r"layer 1 \(ConvTranspose.*needs inputs with positions"):
        tn.serial(tn.Dense(), tn.ConvTranspose(2), tn.Dense()).nngp(torch.ones(2, 3, dtype=F64))
    with pytest.raises(TypeError, match=r"ConvTranspose\(filter_shape, width=3\)"):
        tn.ConvTranspose(3, (2, 2))
