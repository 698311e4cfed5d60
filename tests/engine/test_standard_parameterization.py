"""The standard parameterisation in the infinite-width kernels: ``Dense(parameterization="standard",
width=n)`` and ``Conv(..., parameterization="standard", width=n)``, neural-tangents'
``parameterization="standard"`` with s = (1, 1):

    NNGP:   the same as the NTK parameterisation's,
    Dense:  Theta' = n_in K + W_std^2 Theta + 1,
    Conv:   Theta' = C_in |F| L(K) + W_std^2 L(Theta) + 1     (L the window mean),

checked against neural-tangents 0.6.5 (a fixture made by tests/fixtures/neural_tangents/make_layers.py),
against the twin network in the NTK parameterisation, and against the empirical NTK of the finite
networks that the same descriptions build.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from nt_reference import assert_matches, channels_first, load

import torchntk as tn
from torchntk import ArchitectureError

F64 = torch.float64
WS, BS = 1.2, 0.3   # the fixture's scales


def _sconv(width, window=(3, 3), padding="same", bias_std=BS, stride=1):
    return tn.Conv(window, stride=stride, padding=padding, weight_std=WS, bias_std=bias_std,
                   parameterization="standard", width=width)


def _sdense(width=None, bias_std=BS, parameterization="standard"):
    return tn.Dense(weight_std=WS, bias_std=bias_std, parameterization=parameterization, width=width)


# The twins of make_layers.py's STANDARD_CASES and STANDARD_VECTOR_CASES, under the same names.
TWINS = {
    "std_cnn_flatten": tn.serial(_sconv(6), tn.ReLU(), _sconv(4, (2, 2), "valid"), tn.ReLU(), tn.Flatten(),
                                 _sdense(1)),
    "std_cnn_gap": tn.serial(_sconv(5, stride=(2, 1)), tn.Erf(), tn.GlobalAvgPool(), _sdense(1)),
    "std_cnn_mixed": tn.serial(tn.Conv((3, 3), padding="same", weight_std=WS, bias_std=BS, width=6), tn.ReLU(),
                               _sconv(4, (2, 2), "circular", bias_std=0.0), tn.ReLU(), tn.AvgPool((2, 2), stride=1),
                               tn.Flatten(), _sdense(3, parameterization="ntk"), tn.ReLU(), _sdense(1)),
    # locally connected: a weight and a bias per output position, the NTK's 1 on the positions' diagonal
    "std_conv_local": tn.serial(tn.ConvLocal((3, 3), padding="same", weight_std=WS, bias_std=BS,
                                             parameterization="standard", width=6), tn.ReLU(),
                                tn.ConvLocal((2, 2), weight_std=WS, bias_std=BS, parameterization="standard", width=4),
                                tn.ReLU(), tn.GlobalAvgPool(), _sdense(1)),
    "std_conv_transpose": tn.serial(tn.ConvTranspose((3, 3), stride=2, padding="same", weight_std=WS, bias_std=BS,
                                                     parameterization="standard", width=6), tn.ReLU(), tn.Flatten(),
                                    _sdense(1)),
}

VECTOR_TWINS = {
    "std_mlp": tn.serial(_sdense(16), tn.ReLU(), _sdense(8), tn.ReLU(), _sdense(1)),
    "std_mlp_zero_bias": tn.serial(_sdense(16, 0.0), tn.ReLU(), _sdense(8, 0.0), tn.ReLU(), _sdense(1, 0.0)),
    "std_mixed": tn.serial(_sdense(8, parameterization="ntk"), tn.Erf(), _sdense(8), tn.FanOut(2),
                           tn.parallel(tn.serial(tn.ReLU(), _sdense(8)), tn.Identity()), tn.FanInSum(),
                           _sdense(5, parameterization="ntk"), tn.ReLU(), _sdense(1)),
}


@pytest.fixture(scope="module")
def reference():
    return load()


# -- against neural-tangents ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TWINS) + sorted(VECTOR_TWINS))
def test_kernels_equal_neural_tangents(name, reference):
    if name in TWINS:
        spec, x1, x2 = TWINS[name], channels_first(reference["x1"]), channels_first(reference["x2"])
    else:
        spec, x1, x2 = VECTOR_TWINS[name], torch.from_numpy(reference["v1"]), torch.from_numpy(reference["v2"])
    for tag, second in (("", x2), ("_self", None)):
        nngp, ntk = spec.kernels(x1, second)
        assert_matches(reference, name, tag, nngp, ntk)


def test_the_fixture_covers_every_twin(reference):
    # a network renamed on one side only would otherwise go untested
    made = {key.rsplit("_", 1)[0] for key in reference if key.endswith("_nngp") and not key.endswith("_self_nngp")}
    assert {name for name in made if name.startswith("std_")} == set(TWINS) | set(VECTOR_TWINS)


# -- identities with the NTK parameterisation ------------------------------------------------


def _twin(spec_layers, parameterization):
    return tn.serial(*[tn.Dense(weight_std=l.weight_std, bias_std=l.bias_std, parameterization=parameterization,
                                width=l.width) if isinstance(l, tn.Dense) else l for l in spec_layers])


def test_nngp_is_the_ntk_parameterisations_exactly():
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((5, 4)))
    layers = VECTOR_TWINS["std_mlp"].layers
    std, ntk = _twin(layers, "standard"), _twin(layers, "ntk")
    assert torch.equal(std.nngp(x), ntk.nngp(x))   # the same operations on the same numbers
    images = channels_first(np.random.default_rng(2).standard_normal((3, 5, 4, 2)))
    conv_ntk = tn.serial(*[tn.Conv(c.filter_shape, stride=c.stride, padding=c.padding, weight_std=c.weight_std,
                                   bias_std=c.bias_std, width=c.width) if isinstance(c, tn.Conv) else
                           (tn.Dense(weight_std=WS, bias_std=BS) if isinstance(c, tn.Dense) else c)
                           for c in TWINS["std_cnn_flatten"].layers])
    assert torch.equal(TWINS["std_cnn_flatten"].nngp(images), conv_ntk.nngp(images))


def test_one_hidden_layer_ntks_differ_by_the_width_factors():
    """With K1 = w^2 x.x'/n0 + b^2, E = E[relu(u) relu(v)] and D = E[relu'(u) relu'(v)] under K1
    (the arc-cosine kernels, written out here):

        ntk:       Theta = (w^2 E + b^2) + w^2 D (w^2 x.x'/n0 + b^2)
        standard:  Theta = (n1 E + 1) + w^2 D (x.x' + 1)

    each layer's weights contribute their fan-in (n, or w^2 in the NTK parameterisation) times
    the covariance of the layer's input, its bias 1 (or b^2)."""
    n0, n1, w, b = 4, 16, 1.3, 0.4
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((5, n0)))
    dot = x @ x.T
    k1 = w**2 * dot / n0 + b**2
    q = k1.diagonal()
    norms = torch.sqrt(q[:, None] * q[None, :])
    theta = torch.arccos((k1 / norms).clamp(-1, 1))
    e = norms * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) / (2 * math.pi)
    d = (math.pi - theta) / (2 * math.pi)
    want_ntk = (w**2 * e + b**2) + w**2 * d * k1
    want_std = (n1 * e + 1) + w**2 * d * (dot + 1)
    ntk = tn.mlp(2, "relu", weight_std=w, bias_std=b).ntk(x)
    std = tn.mlp(2, "relu", weight_std=w, bias_std=b, parameterization="standard", width=n1).ntk(x)
    # Float64 closed forms in another order; arccos near 1 on the diagonal loses ~1e-8 in theta,
    # which moves E and D by ~1e-8 relative there: 1e-7 of the largest entry.
    torch.testing.assert_close(ntk, want_ntk, rtol=0, atol=1e-7 * want_ntk.abs().max().item())
    torch.testing.assert_close(std, want_std, rtol=0, atol=1e-7 * want_std.abs().max().item())


def test_ntk_is_affine_in_the_last_hidden_width_with_the_readouts_input_covariance():
    """Theta_std = n_{L-1} K_act + (terms without n_{L-1}), K_act the covariance of the readout's
    input (the NNGP of the network with the readout replaced by Dense(weight_std=1, bias_std=0)):
    one more unit in the last hidden layer adds exactly K_act."""
    x = torch.from_numpy(np.random.default_rng(4).standard_normal((4, 3)))

    def spec(n2, readout):
        return tn.serial(_sdense(7), tn.Erf(), _sdense(n2), tn.ReLU(), readout)
    slope = spec(12, _sdense()).ntk(x) - spec(11, _sdense()).ntk(x)
    k_act = spec(12, tn.Dense(weight_std=1.0, bias_std=0.0)).nngp(x)
    # Differences of O(12 K) numbers: round-off, ~1e-15 of them.
    torch.testing.assert_close(slope, k_act, rtol=1e-12, atol=1e-12 * 12 * k_act.abs().max().item())


# -- the finite networks: Monte Carlo over seeds ----------------------------------------------


@pytest.mark.parametrize("case", ["mlp", "cnn_flatten", "cnn_gap"])
def test_empirical_ntk_mean_is_the_kernel(case):
    """One hidden layer: the first layer's pre-activations are exactly Gaussian at any width and
    independent of the readout's weights, so the empirical NTK's mean over seeds is the kernel
    exactly (no 1/width bias); what is left is Monte Carlo error, checked at 4.5 standard errors
    of the mean per entry (over at most 16 entries the chance of a false alarm is ~1e-4)."""
    rng = np.random.default_rng(5)
    if case == "mlp":
        spec = tn.serial(_sdense(24), tn.ReLU(), _sdense())
        x = torch.from_numpy(rng.standard_normal((4, 3)))
    else:
        readout = [tn.Flatten()] if case == "cnn_flatten" else [tn.GlobalAvgPool()]
        spec = tn.serial(_sconv(6, (2, 2), "valid"), tn.ReLU(), *readout, _sdense())
        x = torch.from_numpy(rng.standard_normal((3, 2, 3, 3)))
    want = spec.ntk(x)
    seeds = 300
    samples = torch.stack([tn.empirical_ntk(spec.network(seed=s, dtype=F64, input_shape=tuple(x.shape[1:])), x,
                                            method="jacobian", outputs="trace") for s in range(seeds)])
    mean, sem = samples.mean(0), samples.std(0) / math.sqrt(seeds)
    assert ((mean - want).abs() <= 4.5 * sem).all(), ((mean - want) / sem)


def test_finite_standard_layer_bias_gradient_is_one():
    """A depth-1 network f = W x + b: Theta = x.x' + 1 at every seed, the 1 from d f / d b = 1
    even at bias_std = 0, exactly the kernel's n0 K + 1 with K = x.x'/n0."""
    x = torch.from_numpy(np.random.default_rng(6).standard_normal((4, 5)))
    spec = tn.serial(tn.Dense(bias_std=0.0, parameterization="standard"))
    net = spec.network(seed=3, dtype=F64, in_features=5)
    emp = tn.empirical_ntk(net, x, method="jacobian", outputs="trace")
    want = x @ x.T + 1
    torch.testing.assert_close(emp, want, rtol=1e-13, atol=1e-13)   # the same sums, another order
    torch.testing.assert_close(spec.ntk(x), want, rtol=1e-13, atol=1e-13)


# -- descriptions, networks and data -----------------------------------------------------------


def test_json_round_trip_keeps_parameterisation_and_widths():
    rng = np.random.default_rng(7)
    for spec, x in ((VECTOR_TWINS["std_mixed"], torch.from_numpy(rng.standard_normal((3, 4)))),
                    (TWINS["std_cnn_mixed"], torch.from_numpy(rng.standard_normal((2, 2, 6, 5))))):
        data = json.loads(json.dumps(spec.to_dict()))
        back = tn.from_dict(data)
        assert back.to_dict() == data and repr(back) == repr(spec)
        for a, b in zip(spec.kernels(x), back.kernels(x), strict=True):
            assert torch.equal(a, b)
        net, net_back = (s.network(seed=2, dtype=F64, input_shape=tuple(x.shape[1:])) for s in (spec, back))
        assert torch.equal(net(x), net_back(x))
    # the defaults are left out: NTK-parameterisation descriptions read and hash as they always have
    assert tn.Dense().to_dict() == {"layer": "Dense", "bias_std": 0.1, "weight_std": 1.0}
    assert "width" not in tn.Conv(3).to_dict() and "parameterization" not in tn.Conv(3).to_dict()


def test_network_takes_its_widths_and_parameterisation_from_the_layers():
    spec = tn.serial(_sdense(16), tn.ReLU(), tn.Dense(), tn.ReLU(), _sdense(3))
    net = spec.network(width=5, seed=0, dtype=F64, in_features=4)
    assert net.widths == (4, 16, 5, 3)   # layer widths win, width= fills, the last one is out_features
    assert [m.parameterization for m in net.dense] == ["standard", "ntk", "standard"]
    assert spec.network(width=[16, 7], out_features=3, in_features=4).widths == (4, 16, 7, 3)
    mlp = tn.mlp(3, parameterization="standard", width=[6, 5])
    assert [layer.width for layer in mlp.weighted_layers()] == [6, 5, None]
    assert mlp.network(out_features=2, in_features=3).widths == (3, 6, 5, 2)


@pytest.mark.parametrize("make, error, match", [
    (lambda: tn.Dense(parameterization="mup"), ValueError, "Dense: parameterization must be one of"),
    (lambda: tn.Conv(3, parameterization="NTK"), ValueError, "Conv: parameterization must be one of"),
    (lambda: tn.Dense(width=0), ValueError, "Dense: width must be a positive integer"),
    (lambda: tn.Conv(3, width=2.5), TypeError, "Conv: width must be a positive integer"),
    (lambda: tn.Dense(512), TypeError, r"Dense\(width=512\)"),
    (lambda: tn.mlp(3, width=[4]), ValueError, "one size per hidden layer"),
    (lambda: tn.mlp(2).network(parameterization="standard"), TypeError,
     "Dense\\(parameterization='standard', width=n\\)"),
    (lambda: tn.serial(_sdense(8), tn.ReLU(), _sdense(4)).network(width=[9]), ValueError,
     r"width\[0\] = 9, but weighted layer 0 .* has width=8"),
    (lambda: tn.serial(_sdense(8), tn.ReLU(), _sdense(4)).network(out_features=2), ValueError,
     "out_features=2, but the last weighted layer .* has width=4"),
])
def test_bad_options_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_unknown_input_width_names_the_layer():
    x = torch.zeros(2, 3, dtype=F64)
    spec = tn.serial(tn.Dense(), tn.ReLU(), _sdense())     # the first layer has no width
    with pytest.raises(ArchitectureError, match=r"layer 2 \(Dense\(.*\): in the standard parameterisation .*input "
                                                r"width, which is unknown.*Give that layer width=n"):
        spec.ntk(x)
    spec.network(width=8, in_features=3)(x.float())       # a finite network takes network(width=...) instead
    images = torch.zeros(2, 1, 4, 4, dtype=F64)
    with pytest.raises(ArchitectureError, match=r"layer 2 \(Conv\(.*Conv\(\(3, 3\), width=64\)"):
        tn.serial(tn.Conv(2), tn.ReLU(), _sconv(3), tn.Flatten(), tn.Dense()).ntk(images)
    tn.serial(tn.Conv(2, width=5), tn.ReLU(), _sconv(3), tn.Flatten(), tn.Dense()).ntk(images)   # known: fine


def test_branches_of_different_widths_are_refused():
    x = torch.zeros(2, 3, dtype=F64)
    summed = tn.serial(_sdense(4), tn.FanOut(2), tn.parallel(_sdense(5), tn.Identity()), tn.FanInSum(), _sdense())
    with pytest.raises(ArchitectureError, match="branches of different widths: branch 0 has width 5, branch 1 has "
                                                "width 4"):
        summed.ntk(x)
    concat = tn.serial(tn.Dense(width=3), tn.FanOut(2), tn.parallel(_sdense(5), _sdense(4)), tn.FanInConcat(),
                       _sdense())
    with pytest.raises(ArchitectureError, match="FanInConcat's kernel is the plain mean"):
        concat.ntk(x)
    # equal widths concatenate to their sum, which a following standard layer reads
    equal = tn.serial(tn.Dense(width=3), tn.FanOut(2), tn.parallel(_sdense(4), _sdense(4)), tn.FanInConcat(), _sdense())
    assert equal.signals(tn.engine.signal.input_signal((3,)))[0][-1].width == 8
