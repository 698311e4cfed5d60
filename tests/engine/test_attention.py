"""SelfAttention: infinite-width global self-attention (neural-tangents' GlobalSelfAttention with
linear_scaling=True) and its finite multi-head networks.

Reference values are neural-tangents 0.6.5's, stored by tests/fixtures/neural_tangents/make_layers.py
(the suite never needs JAX). Tolerance 1e-12 relative to the largest entry: both sides compute
the same float64 products of closed forms (softmax, matrix products over positions, arc-cosine
kernels), in different summation orders, so they agree to round-off and no more. One exception,
as in test_neural_tangents_layers.py: neural-tangents' ReLU takes the angle
arctan2(sqrt(q q' - c^2), c), and for a position against itself q q' - c^2 is round-off whose
square root moves the angle by up to ~1e-8; on the diagonal of a kernel of x against itself the
NTK is compared at 1e-8 (torchntk takes c = sqrt(q q') there exactly).
"""

from __future__ import annotations

import json

import pytest
import torch
from nt_reference import assert_matches, channels_first, load

import torchntk as tn
from torchntk.networks.attention import NTKSelfAttention, attention_heads

A = tn.SelfAttention


def _conv1(width: int = 3, padding: str = "same"):
    return tn.Conv((width,), padding=padding)


# twins of SEQUENCE_CASES / IMAGE_ATTENTION_CASES in make_layers.py; NT's Dense on (N, L, C) acts per
# position, which is Conv((1,)) here
SEQUENCE_TWINS = {
    "attention_softmax": tn.serial(_conv1(), A(query_key_std=1.3, value_std=0.9, bias_std=0.2), tn.ReLU(),
                                   tn.GlobalAvgPool(), tn.Dense()),
    "attention_identity": tn.serial(tn.Conv((1,)), A(mechanism="identity", query_key_std=0.7, value_std=1.1),
                                    tn.Erf(), tn.Flatten(), tn.Dense()),
    "attention_abs": tn.serial(_conv1(), tn.ReLU(), _conv1(), A(mechanism="abs", query_key_std=0.8, bias_std=0.3),
                               tn.Flatten(), tn.Dense()),
    "attention_relu": tn.serial(_conv1(2, "valid"), A(mechanism="relu", query_key_std=1.2, value_std=0.8), tn.ReLU(),
                                tn.GlobalAvgPool(), tn.Dense()),
    "attention_positional": tn.serial(_conv1(), A(query_key_std=1.5, bias_std=0.1, positional="sum",
                                                  positional_std=0.8), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense()),
    "attention_positional_relu": tn.serial(tn.Conv((1,)), A(mechanism="relu", query_key_std=0.6, value_std=1.2,
                                                            positional="sum", positional_std=1.4),
                                           tn.Flatten(), tn.Dense()),
    "attention_input": tn.serial(A(query_key_std=0.9, bias_std=0.2), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense()),
    "attention_twice": tn.serial(_conv1(), A(bias_std=0.1), tn.ReLU(), A(mechanism="identity", query_key_std=0.5,
                                                                         value_std=0.9),
                                 tn.GlobalAvgPool(), tn.Dense()),
}
IMAGE_TWINS = {
    "attention_images": tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.Conv((3, 3), padding="same"),
                                  A(query_key_std=1.1, bias_std=0.1, positional="sum"), tn.ReLU(),
                                  tn.GlobalAvgPool(), tn.Dense()),
}


@pytest.fixture(scope="module")
def reference():
    return load()


@pytest.mark.parametrize("name", sorted(SEQUENCE_TWINS) + sorted(IMAGE_TWINS))
def test_kernels_equal_neural_tangents(name, reference):
    if name in SEQUENCE_TWINS:
        spec, x1, x2 = SEQUENCE_TWINS[name], channels_first(reference["s1"]), channels_first(reference["s2"])
    else:
        spec, x1, x2 = IMAGE_TWINS[name], channels_first(reference["x1"]), channels_first(reference["x2"])
    for tag, second in (("", x2), ("_self", None)):
        nngp, ntk = spec.kernels(x1, second)
        assert_matches(reference, name, tag, nngp, ntk)


def test_the_fixture_covers_every_twin(reference):
    # a network renamed on one side only would otherwise go untested
    made = {key.rsplit("_", 1)[0] for key in reference if key.endswith("_nngp") and not key.endswith("_self_nngp")}
    assert {name for name in made if name.startswith("attention_")} == set(SEQUENCE_TWINS) | set(IMAGE_TWINS)


def _sequences(n: int, channels: int = 3, length: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, length, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("mechanism", ["softmax", "identity", "abs", "relu"])
def test_one_position_weighs_the_kernel_by_its_single_weight(mechanism):
    # with one position G(x) is the scalar mechanism(qk K(x, x)): softmax's is exactly 1, so the
    # NNGP is the input's, and the NTK adds the value and output weights' 2 K
    x = _sequences(4, length=1)
    below = tn.serial(tn.Conv((1,)), tn.ReLU(), tn.Conv((1,)))
    plain = tn.serial(below, tn.GlobalAvgPool())
    attended = tn.serial(below, A(mechanism=mechanism, query_key_std=0.7), tn.GlobalAvgPool())
    k, t = plain.kernels(x)
    ka, ta = attended.kernels(x)
    if mechanism == "softmax":
        g = torch.ones(4, dtype=torch.float64)
    else:
        logits = 0.7 * k.diagonal()
        g = {"identity": logits, "abs": logits.abs(), "relu": logits.clamp(min=0)}[mechanism]
    weight = g[:, None] * g[None, :]
    # one product and one sum of float64 numbers per entry: round-off, 1e-15 relative
    torch.testing.assert_close(ka, weight * k, rtol=1e-15, atol=0)
    torch.testing.assert_close(ta, weight * (t + 2 * k), rtol=1e-15, atol=0)
    if mechanism == "softmax":
        assert torch.equal(ka, k)


def test_json_round_trip_keeps_every_argument_and_the_kernels():
    spec = tn.serial(_conv1(), A(mechanism="relu", query_key_std=0.6, value_std=1.2, bias_std=0.3, positional="sum",
                                 positional_std=1.4), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    back = tn.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert repr(back) == repr(spec)
    x = _sequences(3)
    for ours, theirs in zip(spec.kernels(x), back.kernels(x), strict=True):
        assert torch.equal(ours, theirs)
    rebuilt = eval(repr(spec), {name: getattr(tn, name) for name in dir(tn)})   # repr reads as the code
    assert torch.equal(rebuilt.ntk(x), spec.ntk(x))
    defaults = tn.from_dict({"layer": "serial", "layers": [{"layer": "Conv", "filter_shape": [1]},
                                                           {"layer": "SelfAttention"}, {"layer": "GlobalAvgPool"}]})
    assert repr(defaults.to_dict()["network"]["layers"][1]) == repr(A().to_dict())


def test_errors_name_the_layer_and_what_to_do():
    x = _sequences(2)
    with pytest.raises(tn.ArchitectureError, match=r"layer 1 \(SelfAttention.*mechanism must be one of"):
        tn.serial(tn.Conv((1,)), A(mechanism="sigmoid"), tn.GlobalAvgPool(), tn.Dense()).kernels(x)
    with pytest.raises(tn.ArchitectureError, match=r"SelfAttention.*positional must be None .* or 'sum'"):
        tn.serial(tn.Conv((1,)), A(positional="concat"), tn.GlobalAvgPool(), tn.Dense()).kernels(x)
    with pytest.raises(tn.ArchitectureError, match=r"SelfAttention.*query_key_std must be finite and >= 0"):
        tn.serial(tn.Conv((1,)), A(query_key_std=-1.0), tn.GlobalAvgPool(), tn.Dense()).kernels(x)
    with pytest.raises(tn.ArchitectureError, match=r"layer 1 \(SelfAttention.*attends over positions.*got vectors"):
        tn.serial(tn.Dense(), A(), tn.Dense()).kernels(torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(tn.ArchitectureError, match=r"SelfAttention.*attends over positions.*flattened"):
        tn.serial(tn.Conv((1,)), tn.Flatten(), A(), tn.Dense()).kernels(x)


SPEC = tn.serial(_conv1(), A(query_key_std=1.2, bias_std=0.1, positional="sum"), tn.ReLU(), _conv1(),
                 A(mechanism="abs", query_key_std=0.4), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())


def test_tiles_float32_diagonal_and_symmetry():
    x, y = _sequences(7, seed=1), _sequences(5, seed=2)
    k, t = SPEC.kernels(x, y)
    # tiles compute the same entries with the same products over positions; batched products of
    # other batch sizes may sum in another order: round-off, 1e-13 relative
    for ours, whole in zip(SPEC.kernels(x, y, tile=2), (k, t), strict=True):
        torch.testing.assert_close(ours, whole, rtol=1e-13, atol=1e-13 * whole.abs().max().item())
    kk, tt = SPEC.kernels(x)
    assert torch.equal(kk, kk.T) and torch.equal(tt, tt.T)
    for ours, whole in zip(SPEC.kernels(x, tile=3), (kk, tt), strict=True):
        assert torch.equal(ours, ours.T)
        torch.testing.assert_close(ours, whole, rtol=1e-13, atol=1e-13 * whole.abs().max().item())
    dk, dt = SPEC.kernels(x, diagonal=True)
    torch.testing.assert_close(dk, kk.diagonal(), rtol=1e-13, atol=0)
    torch.testing.assert_close(dt, tt.diagonal(), rtol=1e-13, atol=0)
    # float32 carries ~6e-8 relative per operation through a few dozen of them: 1e-5
    k32, t32 = SPEC.kernels(x.float(), y.float(), dtype=torch.float32)
    assert k32.dtype == torch.float32
    torch.testing.assert_close(k32.double(), k, rtol=1e-5, atol=1e-5 * k.abs().max().item())
    torch.testing.assert_close(t32.double(), t, rtol=1e-5, atol=1e-5 * t.abs().max().item())


def test_kernels_differentiate_in_the_scales():
    x = _sequences(3)
    qk = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    spec = tn.serial(_conv1(), A(query_key_std=qk, value_std=1.1), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    spec.ntk(x).sum().backward()

    def total(value):
        return tn.serial(_conv1(), A(query_key_std=value, value_std=1.1), tn.ReLU(), tn.GlobalAvgPool(),
                         tn.Dense()).ntk(x).sum().item()
    h = 1e-5   # central difference: error O(h^2) ~ 1e-10 relative, round-off ~1e-16 / h ~ 1e-11
    numeric = (total(0.8 + h) - total(0.8 - h)) / (2 * h)
    assert abs(qk.grad.item() - numeric) < 1e-7 * abs(numeric)


def test_finite_network_heads_shapes_and_parameterizations():
    assert attention_heads(256) == (16, 16)
    assert attention_heads(10) == (3, 3)
    spec = tn.serial(_conv1(), A(positional="sum", bias_std=0.2), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    x = _sequences(4)
    net = spec.network(width=36, out_features=2, seed=3, dtype=torch.float64)
    out = net(x)   # built for the first input's shape
    layer = next(m for m in net.modules() if isinstance(m, NTKSelfAttention))
    assert (layer.heads, layer.head_width) == (6, 6)
    assert layer.key.shape == (6, 36, 6) and layer.out.shape == (36, 6, 6) and layer.positional.shape == (36, 5)
    assert out.shape == (4, 2)
    again = spec.network(width=36, out_features=2, seed=3, dtype=torch.float64)(x)
    assert torch.equal(out, again)
    # the module's standard parameterisation draws the scales into the weights: the same function
    # at initialisation (a few rescalings in float64 apart: 1e-12)
    hidden = torch.randn(4, 36, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    pair = [NTKSelfAttention(36, 36, (5,), mechanism="softmax", query_key_std=1.0, value_std=1.0, bias_std=0.2,
                             positional="sum", positional_std=1.0, parameterization=kind, seed=3, index=1,
                             dtype=torch.float64, device=None) for kind in ("ntk", "standard")]
    torch.testing.assert_close(pair[1](hidden), pair[0](hidden), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"positional embeddings cover positions \(5,\), but its input has \(4,\)"):
        layer(_sequences(2, channels=36, length=4))
    images = tn.serial(tn.Conv((2, 2)), A(), tn.GlobalAvgPool(), tn.Dense())
    assert images.network(width=9, seed=0)(torch.randn(2, 3, 4, 3)).shape == (2, 1)


def _monte_carlo(spec, x, width: int, samples: int):
    """Mean and standard error over ``samples`` networks of the NNGP, the NTK with the key
    weights left out, and the key weights' share of the NTK, each (N, N)."""
    nngp, ntk, keys = [], [], []
    for seed in range(samples):
        net = spec.network(width=width, out_features=4, seed=seed, dtype=torch.float64)
        f = net(x).detach()
        nngp.append(f @ f.T / f.shape[1])
        full = tn.empirical_ntk(net, x, outputs="trace")
        for module in net.modules():
            if isinstance(module, NTKSelfAttention):
                module.key.requires_grad_(False)
        rest = tn.empirical_ntk(net, x, outputs="trace")
        ntk.append(rest)
        keys.append(full - rest)
    return [(torch.stack(v).mean(0), torch.stack(v).std(0) / samples ** 0.5) for v in (nngp, ntk, keys)]


def test_finite_networks_tend_to_the_limit():
    # Width w: floor(sqrt(w)) heads of d = floor(w / heads) channels. The NNGP and the NTK of every
    # weight but the keys differ from the limit by the Monte Carlo error and by a bias O(qk^2 / d)
    # from the logits' fluctuations, measured below one standard error at qk = 0.5, w = 256 (20
    # to 30 networks): so 4 standard errors. The keys' share of the NTK is O(1 / d): it halves when d
    # doubles (w = 64 -> 256), which the last check asserts within a 30% band around 1/2.
    x = _sequences(3, length=4, seed=5)
    spec = tn.serial(A(query_key_std=0.5, bias_std=0.1), tn.GlobalAvgPool(), tn.Dense())
    k, t = spec.kernels(x)
    (mk, sk), (mt, st), (key256, _) = _monte_carlo(spec, x, 256, 20)
    assert ((mk - k).abs() <= 4 * sk).all()
    assert ((mt - t).abs() <= 4 * st).all()
    (_, _), (_, _), (key64, _) = _monte_carlo(spec, x, 64, 10)
    ratio = (key256.abs().max() / key64.abs().max()).item()
    assert 0.35 < ratio < 0.65, ratio


@pytest.mark.parametrize("case", ["positional", "images"])
def test_finite_nngp_with_positional_embeddings_and_images_tends_to_the_limit(case):
    # the NNGP alone (no empirical NTK: cheap); the logits' bias O(qk^2 / d) was measured below
    # two standard errors here (width 256, 30 networks), so 4 standard errors
    generator = torch.Generator().manual_seed(1)
    if case == "positional":   # a hidden layer first: the embeddings' cross terms vanish only at infinite C
        spec = tn.serial(tn.Conv((1,)), A(query_key_std=0.5, positional="sum", positional_std=1.3, bias_std=0.1),
                         tn.GlobalAvgPool(), tn.Dense())
        x = torch.randn(3, 3, 4, generator=generator, dtype=torch.float64)
    else:
        spec = tn.serial(tn.Conv((2, 2)), tn.ReLU(), A(mechanism="relu", query_key_std=0.5), tn.GlobalAvgPool(),
                         tn.Dense())
        x = torch.randn(3, 2, 3, 3, generator=generator, dtype=torch.float64)
    mc = tn.monte_carlo_kernels(spec, x, width=256, n_samples=30, seed=0, out_features=4, kernels="nngp",
                                dtype=torch.float64)
    assert ((mc.nngp - spec.nngp(x)).abs() <= 4 * mc.nngp_stderr).all()
