"""LayerNorm over chosen axes: the channels at each position (the default), or the channels and
some or all positions together. Its kernel divides by the mean variance over the positions
normalised together (neural-tangents' ``stax.LayerNorm(axis=...)``, compared in
test_neural_tangents_layers.py); here the finite module against torch's own layer norm, the
kernels against Monte Carlo over finite networks (Proposition 1), and the argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torchntk as tn
from torchntk.networks import modules

X = torch.from_numpy(np.random.default_rng(3).standard_normal((4, 2, 5, 4)))


def test_the_default_is_the_channels_at_each_position_and_writes_no_axis():
    for layer in (tn.LayerNorm(), tn.LayerNorm(axis=1), tn.LayerNorm(axis=(1,))):
        assert layer.to_dict() == {"layer": "LayerNorm"} and repr(layer) == "LayerNorm()"
    one = tn.serial(tn.Conv((3, 3), padding="same"), tn.LayerNorm(), tn.ReLU(), tn.Flatten(), tn.Dense())
    minus = tn.serial(tn.Conv((3, 3), padding="same"), tn.LayerNorm(axis=-3), tn.ReLU(), tn.Flatten(), tn.Dense())
    # the same axis by another name takes the same code path: equal to the last bit
    for a, b in zip(one.kernels(X), minus.kernels(X), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("axis, torch_dims", [((1, 2, 3), (0, 1, 2, 3)), ((1, 3), (0, 2, 1, 3)),
                                              ((1, 2), (0, 3, 1, 2))])
def test_finite_module_is_torchs_layer_norm_over_those_axes(axis, torch_dims):
    # torch's layer_norm normalises the trailing dims: move the chosen axes to the end
    x = X.clone()
    ours = modules.LayerNorm(axes=axis)(x)
    moved = x.permute(torch_dims)
    theirs = F.layer_norm(moved, moved.shape[-len(axis):], eps=modules.LAYER_NORM_EPS)
    back = torch.argsort(torch.tensor(torch_dims)).tolist()
    # two float64 computations of the same means and variances: round-off only
    torch.testing.assert_close(ours, theirs.permute(back), rtol=1e-12, atol=1e-12)
    assert torch.equal(x, X)   # the input is not modified


def test_whole_image_before_flatten_is_all_features_after_it():
    conv = tn.Conv((3, 3), padding="same")
    before = tn.serial(conv, tn.LayerNorm(axis=(1, 2, 3)), tn.Flatten(), tn.Dense())
    after = tn.serial(conv, tn.Flatten(), tn.LayerNorm(), tn.Dense())
    # the same mean of the same variances, taken before or after the readout: round-off only
    for a, b in zip(before.kernels(X), after.kernels(X), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def _net():
    return tn.serial(tn.Conv((3, 3), padding="same"), tn.LayerNorm(axis=(1, 2, 3)), tn.ReLU(),
                     tn.Conv((2, 2)), tn.LayerNorm(axis=(1, 3)), tn.Erf(), tn.AvgPool(2, stride=1),
                     tn.Flatten(), tn.Dense())


def test_proposition_1_outputs_have_the_nngp_covariance():
    spec, x = _net(), X[:, :1]
    seeds, out = 100, 16
    per_network = []
    for seed in range(seeds):
        f = spec.network(width=96, out_features=out, seed=seed, dtype=torch.float64, input_shape=(1, 5, 4))(x)
        per_network.append((f @ f.T / out).detach())
    per_network = torch.stack(per_network)
    mean, stderr = per_network.mean(0), per_network.std(0) / seeds ** 0.5
    nngp = spec.nngp(x)
    # 10 distinct entries; |z| < 4.5 fails by chance with probability ~1e-4 if the kernel is right;
    # the finite-width bias at 96 channels, O(1/96), sits inside the ~3% error bars
    assert ((mean - nngp) / stderr).abs().max() < 4.5
    # power: a kernel 20% off is rejected by the same test
    assert ((mean - 1.2 * nngp) / stderr).abs().max() > 4.5


def test_json_round_trip_and_hand_written_axes():
    spec = _net()
    back = tn.from_dict(spec.to_dict())
    assert back.to_dict() == spec.to_dict() and "LayerNorm(axis=(1, 2, 3))" in repr(back)
    for a, b in zip(spec.kernels(X[:, :1]), back.kernels(X[:, :1]), strict=True):
        assert torch.equal(a, b)
    node = {"layer": "serial", "layers": [{"layer": "Conv", "filter_shape": [3]},
                                          {"layer": "LayerNorm", "axis": [2, 1]}, {"layer": "Flatten"},
                                          {"layer": "Dense"}]}
    seq = torch.from_numpy(np.random.default_rng(1).standard_normal((3, 2, 6)))
    hand = tn.from_dict(node)
    ref = tn.serial(tn.Conv(3), tn.LayerNorm(axis=(1, 2)), tn.Flatten(), tn.Dense())
    assert torch.equal(hand.nngp(seq), ref.nngp(seq))


@pytest.mark.parametrize("axis, match", [
    (0, "includes 0, the batch"), ((0, 1, 2, 3), "includes 0, the batch"),
    ((2, 3), "leaves out 1, the channels"), (-1, "leaves out 1, the channels"),
    ((1, 4), "out of range for inputs of rank 4"), ((1, 1), "same axis twice"), ((1, -3), "same axis twice"),
])
def test_bad_axes_are_refused_naming_the_layer(axis, match):
    spec = tn.serial(tn.Conv((3, 3)), tn.LayerNorm(axis=axis), tn.Flatten(), tn.Dense())
    with pytest.raises(tn.ArchitectureError, match=rf"layer 1 \(LayerNorm\(axis=.*{match}"):
        spec.nngp(X)


def test_vectors_and_flattened_inputs_have_only_the_features_axis():
    spec = tn.serial(tn.Dense(), tn.LayerNorm(axis=(1, 2)), tn.Dense())
    with pytest.raises(tn.ArchitectureError, match="out of range for inputs of rank 2"):
        spec.nngp(torch.ones(2, 3, dtype=torch.float64))
    flat = tn.serial(tn.Conv((3, 3)), tn.Flatten(), tn.LayerNorm(axis=(1, 2)), tn.Dense())
    with pytest.raises(tn.ArchitectureError, match="out of range for inputs of rank 2"):
        flat.nngp(X)


@pytest.mark.parametrize("axis", ["channels", (), (1, 2.0), True, None])
def test_axis_must_be_ints(axis):
    with pytest.raises(TypeError, match="LayerNorm: axis must be an int or a non-empty tuple of ints"):
        tn.LayerNorm(axis=axis)
