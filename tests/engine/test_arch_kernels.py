"""Infinite-width kernels of architectures: exact identities that do not share the layers' code,
the conformance properties every kernel must have, and the errors bad descriptions get.

Identities compare two different code paths (e.g. the convolution's window sums against the
dense recursion), so they hold to float64 round-off: 1e-12 relative leaves room for the
different summation orders (a few ulps per layer) while any modelling error is far larger.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import torchntk as tn

RTOL = 1e-12


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


def images(n: int, c: int = 2, h: int = 6, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, c, h, w))


def cnn_gap():
    return tn.serial(tn.Conv((3, 3), padding="same", bias_std=0.1), tn.ReLU(),
                     tn.Conv((3, 2), stride=(2, 1), padding="valid", weight_std=1.3), tn.Erf(),
                     tn.GlobalAvgPool(), tn.Dense(bias_std=0.1))


def cnn_flatten():
    return tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.Conv((2, 3), padding="circular", bias_std=0.2),
                     tn.Gelu(), tn.Flatten(), tn.Dense())


def resnet():
    block = tn.serial(tn.FanOut(2), tn.parallel(tn.serial(tn.ReLU(), tn.Conv((3, 3), padding="same")), tn.Identity()),
                      tn.FanInSum())
    return tn.serial(tn.Conv((3, 3), padding="same"), block, tn.AvgPool((2, 2), stride=2, padding="same"),
                     tn.Conv((3, 3), padding="same"), tn.LayerNorm(), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())


def sequence_net():
    return tn.serial(tn.Conv(3, padding="same"), tn.ReLU(), tn.AvgPool(2), tn.Conv(2), tn.Abs(), tn.Flatten(),
                     tn.Dense(), tn.ReLU(), tn.Dense())


ARCHS = {"cnn_gap": (cnn_gap, (2, 6, 5)), "cnn_flatten": (cnn_flatten, (2, 6, 5)), "resnet": (resnet, (2, 6, 5)),
         "sequence": (sequence_net, (3, 9))}


def _inputs(shape, n, seed):
    return np.random.default_rng(seed).standard_normal((n, *shape))


# -- exact identities -------------------------------------------------------------------


def test_1x1_convolution_is_the_dense_kernel_at_each_position():
    x1, x2 = images(4), images(3, seed=1)
    conv = tn.serial(tn.Conv(1, bias_std=0.3), tn.ReLU(), tn.Conv(1, weight_std=1.5), tn.Erf(), tn.Conv(1))
    dense = tn.serial(tn.Dense(bias_std=0.3), tn.ReLU(), tn.Dense(weight_std=1.5), tn.Erf(), tn.Dense())
    k_conv, t_conv = conv.kernels(x1, x2)
    assert k_conv.shape == (4, 3, 6, 5)   # no readout: each position with itself
    for h in range(6):
        for w in range(5):
            k, t = dense.kernels(x1[:, :, h, w], x2[:, :, h, w])
            assert _rel(k_conv[:, :, h, w], k) < RTOL and _rel(t_conv[:, :, h, w], t) < RTOL


def test_circular_padding_and_global_pool_are_invariant_to_cyclic_shifts():
    spec = tn.serial(tn.Conv((3, 3), padding="circular"), tn.ReLU(), tn.Conv((2, 2), padding="circular"), tn.ReLU(),
                     tn.GlobalAvgPool(), tn.Dense())
    x1, x2 = images(3), images(4, seed=2)
    k, t = spec.kernels(x1, x2)
    shifted = np.roll(x1, shift=(2, -1), axis=(2, 3))
    k_s, t_s = spec.kernels(shifted, x2)
    assert _rel(k_s, k) < RTOL and _rel(t_s, t) < RTOL
    # and the check has power: without circular padding the kernel moves
    zero = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    assert _rel(zero.kernels(shifted, x2)[1], zero.kernels(x1, x2)[1]) > 1e-4


def test_valid_convolution_covering_the_input_is_a_dense_layer_on_the_flattened_input():
    x1, x2 = images(4), images(5, seed=3)
    conv = tn.serial(tn.Conv((6, 5), padding="valid", bias_std=0.2), tn.ReLU(), tn.Flatten(), tn.Dense())
    dense = tn.serial(tn.Dense(bias_std=0.2), tn.ReLU(), tn.Dense())
    k, t = conv.kernels(x1, x2)
    k_d, t_d = dense.kernels(x1.reshape(4, -1), x2.reshape(5, -1))
    assert _rel(k, k_d) < RTOL and _rel(t, t_d) < RTOL


def test_residual_block_with_a_zero_branch_is_its_shortcut():
    x = images(5)
    block = tn.serial(tn.FanOut(2), tn.parallel(tn.serial(tn.ReLU(), tn.Conv((3, 3), padding="same", bias_std=0.0,
                                                                           weight_std=0.0)), tn.Identity()),
                      tn.FanInSum())
    with_block = tn.serial(tn.Conv((3, 3), padding="same"), block, tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    without = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    for a, b in zip(with_block.kernels(x), without.kernels(x), strict=True):
        assert _rel(a, b) < RTOL


def test_flatten_readout_equals_the_mean_over_positions_of_the_spatial_kernel():
    x1, x2 = images(3), images(2, seed=4)
    body = [tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.Conv((3, 3), padding="same")]
    k_sp, t_sp = tn.serial(*body).kernels(x1, x2)                 # (3, 2, 6, 5)
    k, t = tn.serial(*body, tn.Flatten(), tn.Dense(bias_std=0.4, weight_std=0.8)).kernels(x1, x2)
    expect_k = 0.64 * k_sp.mean(axis=(2, 3)) + 0.16
    assert _rel(k, expect_k) < RTOL
    assert _rel(t, 0.64 * t_sp.mean(axis=(2, 3)) + expect_k) < RTOL


def test_layernorm_gives_unit_self_covariance_at_every_position():
    # v / (v + eps) with the finite layer's eps = 1e-12: 1 up to ~1e-12 at these variances
    conv = tn.Conv((3, 3), padding="same", bias_std=0.5)
    x = images(4)
    v = tn.serial(conv).nngp(x, diagonal=True)
    k = tn.serial(conv, tn.LayerNorm()).nngp(x, diagonal=True)
    np.testing.assert_allclose(k, v / (v + 1e-12), rtol=1e-15, atol=0)
    assert np.abs(k - 1).max() < 1e-11


# -- conformance ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ARCHS)
def test_conformance(name):
    make, shape = ARCHS[name]
    spec = make()
    x, z = _inputs(shape, 7, 0), _inputs(shape, 4, 1)
    k, t = spec.kernels(x)
    # exact symmetry of x against itself
    assert np.array_equal(k, k.T) and np.array_equal(t, t.T)
    # blocks of K([X; Z]) are K(X, Z); tiles do not change values
    k_all, t_all = spec.kernels(np.concatenate([x, z]), tile=3)
    k_xz, t_xz = spec.kernels(x, z, tile=2)
    assert _rel(k_all[:7, 7:], k_xz) < RTOL and _rel(t_all[:7, 7:], t_xz) < RTOL
    assert _rel(k_all[:7, :7], k) < RTOL and _rel(t_all[:7, :7], t) < RTOL
    # diagonal=True is the diagonal, computed on its own
    kd, td = spec.kernels(x, diagonal=True)
    assert _rel(kd, np.diag(k)) < RTOL and _rel(td, np.diag(t)) < RTOL
    # positive semi-definite (to round-off)
    for m in (k_all, t_all):
        assert np.linalg.eigvalsh(m).min() > -1e-12 * np.abs(m).max()
    # float32 close to float64: measured 0.6-1.4 float32 eps (1.2e-7); 2e-6 is 16 eps, room for
    # a few roundings per layer in these 3-4 layer networks, far below any modelling error
    k32, t32 = spec.kernels(x, dtype=torch.float32)
    assert _rel(k32, k) < 2e-6 and _rel(t32, t) < 2e-6
    # numpy in, numpy out; tensors in, tensors out
    assert isinstance(k, np.ndarray) and isinstance(spec.ntk(torch.as_tensor(x)), torch.Tensor)


def test_out_features_gives_the_identity_in_output_space():
    x = images(3)
    t = cnn_gap().ntk(x)
    t4 = cnn_gap().ntk(x, out_features=2)
    assert t4.shape == (3, 3, 2, 2) and np.array_equal(t4[..., 0, 0], t) and np.all(t4[..., 0, 1] == 0)


def test_gradients_in_inputs_and_scales_are_finite_at_duplicates_and_zero_inputs():
    x = torch.tensor(images(3), requires_grad=True)
    x_dup = torch.cat([x, x[:1], torch.zeros_like(x[:1])])
    bias = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    spec = tn.serial(tn.Conv((3, 3), padding="same", bias_std=bias), tn.ReLU(), tn.AvgPool(2),
                     tn.Conv((2, 2), bias_std=bias), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    t = spec.ntk(x_dup)
    t.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(bias.grad) and bias.grad != 0
    # the derivative in the bias scale agrees with a central difference
    def value(b):
        s = tn.serial(tn.Conv((3, 3), padding="same", bias_std=b), tn.ReLU(), tn.AvgPool(2),
                      tn.Conv((2, 2), bias_std=b), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
        return float(s.ntk(x_dup.detach()).sum())
    h = 1e-6
    assert abs((value(0.1 + h) - value(0.1 - h)) / (2 * h) - float(bias.grad)) < 1e-6 * abs(float(bias.grad))


# -- description as data ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ARCHS)
def test_descriptions_round_trip_through_json(name):
    make, shape = ARCHS[name]
    spec = make()
    back = tn.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert repr(back) == repr(spec)
    x = _inputs(shape, 3, 0)
    assert np.array_equal(back.ntk(x), spec.ntk(x))
    # repr reads as the code that builds it
    rebuilt = eval(repr(spec), {name: getattr(tn, name) for name in dir(tn)})
    assert np.array_equal(rebuilt.ntk(x), spec.ntk(x))


def test_mlp_round_trips_and_user_callables_refuse_to_be_saved():
    spec = tn.mlp(depth=3, activation=tn.LeakyReLU(0.2), bias_std=0.3)
    assert repr(tn.from_dict(spec.to_dict())) == repr(spec)
    with pytest.raises(ValueError, match="cannot be saved"):
        tn.mlp(depth=2, activation=lambda t: t.tanh()).to_dict()
    with pytest.raises(ValueError, match="unknown layer"):
        tn.from_dict({"format": "torchntk.spec", "version": 1, "network": {"layer": "serial", "layers": [
            {"layer": "os.system"}]}})
    deep: dict = {"layer": "Dense"}
    for _ in range(200):
        deep = {"layer": "serial", "layers": [deep]}
    with pytest.raises(ValueError, match="nests deeper"):
        tn.from_dict(deep)


# -- errors name the layer -------------------------------------------------------------------


@pytest.mark.parametrize("spec, x_shape, message", [
    (lambda: tn.serial(tn.Conv(3), tn.ReLU(), tn.Flatten(), tn.Dense()), (10,), "needs inputs with positions"),
    (lambda: tn.serial(tn.Conv((7, 3)), tn.ReLU(), tn.Flatten(), tn.Dense()), (1, 6, 6), "larger than the input"),
    (lambda: tn.serial(tn.Conv(3, stride=0), tn.Flatten(), tn.Dense()), (1, 6, 6), "stride must be >= 1"),
    (lambda: tn.serial(tn.Conv(3, padding="reflect"), tn.Flatten(), tn.Dense()), (1, 6, 6), "padding must be one of"),
    (lambda: tn.serial(tn.Conv(3), tn.FanOut(2), tn.parallel(tn.Conv(3), tn.Identity()), tn.FanInSum()),
     (1, 6, 6), "different shapes"),
    (lambda: tn.serial(tn.Conv(3), tn.ReLU(), tn.ReLU(), tn.Flatten(), tn.Dense()), (1, 6, 6), "not Gaussian"),
    (lambda: tn.serial(tn.Conv(3), tn.ReLU(), tn.AvgPool(2), tn.ReLU(), tn.Flatten(), tn.Dense()), (1, 8, 8),
     "not Gaussian"),
    (lambda: tn.serial(tn.ReLU(), tn.Conv(3), tn.Flatten(), tn.Dense()), (1, 6, 6), "raw input"),
    (lambda: tn.serial(tn.Conv(3), tn.ReLU(), tn.FanOut(2), tn.parallel(tn.Identity(), tn.Identity()), tn.FanInSum(),
                       tn.Flatten(), tn.Dense()), (1, 6, 6), "correlated"),
    (lambda: tn.serial(tn.Conv(3), tn.Dense()), (1, 6, 6), "put Flatten"),
    (lambda: tn.serial(tn.Conv(3), tn.ReLU(), tn.LayerNorm(), tn.Flatten(), tn.Dense()), (1, 6, 6), "mean zero"),
    (lambda: tn.serial(tn.Conv(3), tn.ReLU(), tn.MaxPool(2), tn.Flatten(), tn.Dense()), (1, 6, 6),
     "monte_carlo_kernels"),
])
def test_bad_descriptions_get_a_clear_error_naming_the_layer(spec, x_shape, message):
    x = np.ones((2, *x_shape))
    with pytest.raises(ValueError, match=message) as info:
        spec().kernels(x)
    assert "layer" in str(info.value) or "MaxPool" in str(info.value)


def test_errors_in_nested_descriptions_name_the_path_to_the_layer():
    # Branch and nesting steps are joined by " > ", and the message follows one ": ", both for the
    # kernels and for a finite network built on its first call.
    nested = tn.serial(tn.Conv(3, padding="same"), tn.FanOut(2),
                       tn.parallel(tn.serial(tn.ReLU(), tn.Conv(9)), tn.Identity()), tn.FanInSum())
    with pytest.raises(ValueError, match=r"^layer 2 \(parallel\(.*\) > branch 0 > layer 1 \(Conv\(9.*\): the filter"):
        nested.kernels(np.ones((2, 1, 5, 5)))
    net = tn.serial(tn.Conv(9), tn.Flatten(), tn.Dense()).network(width=4)
    with pytest.raises(ValueError, match=r"^layer 0 \(Conv\(9[^:]*\): the filter \(9, 9\) is larger"):
        net(torch.ones(2, 1, 5, 5))


def test_inputs_of_other_shapes_are_refused():
    spec = cnn_gap()
    with pytest.raises(ValueError, match="same per-example shape"):
        spec.kernels(images(2), images(2, h=5))
    bad = images(2)
    bad[1, 0, 2, 3] = np.nan
    # The first bad entry is named in the image's own layout (example, then channel and pixel).
    with pytest.raises(ValueError, match=r"NaN or infinite entries \(the first at example 1, position \(0, 2, 3\)"):
        spec.kernels(bad)
