"""Masks of positions (`torchntk.engine.mask`): variable-length sequences, images with missing
pixels, graphs with padding nodes.

A mask marks where each input holds data. The kernels of a padded input with its mask are those
of the unpadded input (exactly, up to round-off), they agree with neural-tangents' masked kernels
(``mask_constant``), and the finite network of a padded input with its mask computes what the
network of the unpadded input computes. Tolerances: the kernels are the same closed forms in the
same float64 arithmetic on both sides, summed in different orders, so they agree to 1e-12 of the
largest entry; neural-tangents' values are held to nt_reference's tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nt_reference import assert_matches, channels_first, load

import torchntk as tn
from torchntk.engine.signal import ArchitectureError

ROUND_OFF = 1e-12


def residual(*branch):
    return [tn.FanOut(2), tn.parallel(tn.serial(*branch), tn.Identity()), tn.FanInSum()]


# twins of tests/fixtures/neural_tangents/make_masks.py's networks, under the same names
SEQUENCE_TWINS = {
    "transformer": tn.serial(tn.Conv(1), *residual(tn.SelfAttention(query_key_std=1.3, value_std=0.9, bias_std=0.2)),
                             tn.LayerNorm(), *residual(tn.Conv(1), tn.ReLU(), tn.Conv(1)), tn.LayerNorm(),
                             tn.GlobalAvgPool(), tn.Dense()),
    "positional": tn.serial(tn.Conv(1), tn.SelfAttention(query_key_std=1.1, value_std=1.0, bias_std=0.1,
                                                         positional="sum", positional_std=0.8),
                            tn.ReLU(), tn.GlobalAvgPool(), tn.Dense()),
    "conv_identity_norm": tn.serial(tn.Conv(3, padding="same"), tn.Erf(), tn.Conv(1),
                                    tn.SelfAttention(mechanism="identity", query_key_std=0.7, value_std=1.1),
                                    tn.LayerNorm(axis=(1, 2)), tn.ReLU(), tn.GlobalSumPool(), tn.Dense()),
    "abs_flatten": tn.serial(tn.Conv(3, padding="same"), tn.ReLU(), tn.Conv(1),
                             tn.SelfAttention(mechanism="abs", query_key_std=0.8, value_std=1.0, bias_std=0.3),
                             tn.Flatten(), tn.Dense()),
    "relu_attention": tn.serial(tn.Conv(1), tn.SelfAttention(mechanism="relu", query_key_std=1.2, value_std=0.8),
                                tn.ReLU(), tn.GlobalAvgPool(), tn.Dense()),
}
IMAGE_TWINS = {
    "image_attention": tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.Conv((1, 1)),
                                 tn.SelfAttention(query_key_std=1.0, value_std=1.0, bias_std=0.1), tn.ReLU(),
                                 tn.GlobalAvgPool(), tn.Dense()),
}
GRAPH_TWIN = tn.serial(tn.Conv(1), tn.Aggregate(), tn.ReLU(), tn.Conv(1), tn.Aggregate(), tn.ReLU(),
                       tn.GlobalAvgPool(), tn.Dense())


@pytest.fixture(scope="module")
def reference():
    return load("masks")


def lengths_mask(lengths, size: int) -> torch.Tensor:
    return torch.arange(size)[None] < torch.as_tensor(lengths)[:, None]


# LayerNorm over positions: neural-tangents' masked mean (mean_and_var in its stax/requirements.py)
# sums eps + cov over every position, padding included, and divides by the real ones, so its
# normalising variance exceeds the finite network's (and torchntk's) by eps (P - c) / c, with
# eps = 1e-12, P = 7 positions and c >= 2 real ones, of a variance that is ~0.1 here: up to ~3e-11
# of each entry (measured: 2e-11; 0 between two unpadded inputs; it grows tenfold with eps). 1e-10
# bounds that and is still far below what a wrong count of positions would cost (O(1/c)).
NT_EPS_AT_PADDING = {"conv_identity_norm": 1e-10}


@pytest.mark.parametrize("name", sorted(SEQUENCE_TWINS))
def test_padded_sequences_match_neural_tangents(reference, name):
    spec = SEQUENCE_TWINS[name]
    # the padding holds neural-tangents' mask constant, a value the mask must make irrelevant
    x1, x2 = channels_first(reference["s1"]), channels_first(reference["s2"])
    m1, m2 = lengths_mask(reference["ls1"], 7), lengths_mask(reference["ls2"], 7)
    tolerance = NT_EPS_AT_PADDING.get(name, 1e-12)
    assert_matches(reference, name, "", *spec.kernels(x1, x2, mask=(m1, m2)), tolerance=tolerance)
    assert_matches(reference, name, "_self", *spec.kernels(x1, mask=m1), tolerance=tolerance)


@pytest.mark.parametrize("name", sorted(IMAGE_TWINS))
def test_images_with_missing_pixels_match_neural_tangents(reference, name):
    spec = IMAGE_TWINS[name]
    x1, x2 = channels_first(reference["i1"]), channels_first(reference["i2"])
    m1, m2 = torch.from_numpy(reference["im1"]), torch.from_numpy(reference["im2"])
    assert_matches(reference, name, "", *spec.kernels(x1, x2, mask=(m1, m2)))
    assert_matches(reference, name, "_self", *spec.kernels(x1, mask=m1))


def test_graphs_with_padding_nodes_match_neural_tangents(reference):
    x1, x2 = channels_first(reference["g1"]), channels_first(reference["g2"])
    m1, m2 = torch.from_numpy(reference["gm1"]), torch.from_numpy(reference["gm2"])
    a1, a2 = torch.from_numpy(reference["a1"]), torch.from_numpy(reference["a2"])
    assert_matches(reference, "graph", "", *GRAPH_TWIN.kernels(x1, x2, adjacency=(a1, a2), mask=(m1, m2)))
    assert_matches(reference, "graph", "_self", *GRAPH_TWIN.kernels(x1, adjacency=a1, mask=m1))


# -- a padded input with its mask is the unpadded input -----------------------------------------

PADDING_INVARIANT = {
    **{name: SEQUENCE_TWINS[name] for name in ("transformer", "positional", "conv_identity_norm", "relu_attention")},
    "deep": tn.serial(tn.Conv(3, padding="same", bias_std=0.3), tn.LayerNorm(axis=(1, 2)), tn.Gelu(),
                      tn.Conv(1), *residual(tn.SelfAttention(mechanism="softmax", bias_std=0.1)), tn.Erf(),
                      tn.ConvLocal(3, padding="same"), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense()),
}
LENGTHS = (6, 3, 5, 1)


def padded_batch(seed: int, lengths=LENGTHS, size: int = 8, channels: int = 3, noise: int = 0):
    """Each sequence (channels, length) on its own, and the batch padded to ``size`` with noise
    (drawn from seed ``noise``)."""
    g = torch.Generator().manual_seed(seed)
    alone = [torch.randn(1, channels, n, generator=g, dtype=torch.float64) for n in lengths]
    batch = 10 * torch.randn(len(lengths), channels, size, generator=torch.Generator().manual_seed(1000 + noise),
                             dtype=torch.float64)
    for i, x in enumerate(alone):
        batch[i, :, :x.shape[2]] = x[0]
    return alone, batch, lengths_mask(lengths, size)


@pytest.mark.parametrize("name", sorted(PADDING_INVARIANT))
def test_a_padded_sequence_with_its_mask_has_the_kernels_of_the_unpadded_one(name):
    spec = PADDING_INVARIANT[name]
    alone, batch, mask = padded_batch(0)
    nngp, ntk = spec.kernels(batch, mask=mask)
    for i, x in enumerate(alone):
        k, t = spec.kernels(x)
        assert abs(nngp[i, i] - k[0, 0]) <= ROUND_OFF * k.abs().max()
        assert abs(ntk[i, i] - t[0, 0]) <= ROUND_OFF * t.abs().max()
    # off the diagonal: two sequences of one length, unpadded, against the same two padded
    pair = torch.cat([alone[0], alone[0].flip(-1)])
    k, t = spec.kernels(pair)
    both = batch[[0, 0]].clone()
    both[1, :, :LENGTHS[0]] = alone[0][0].flip(-1)
    kp, tp = spec.kernels(both, mask=mask[[0, 0]])
    assert torch.allclose(kp, k, rtol=0, atol=ROUND_OFF * float(k.abs().max()))
    assert torch.allclose(tp, t, rtol=0, atol=ROUND_OFF * float(t.abs().max()))


def test_the_padding_of_x2_is_as_irrelevant_as_that_of_x1():
    spec = PADDING_INVARIANT["transformer"]
    alone, batch, mask = padded_batch(1)
    _, other, other_mask = padded_batch(1, noise=1)   # the same sequences, padded with other noise
    k1, t1 = spec.kernels(batch, mask=mask)
    k2, t2 = spec.kernels(batch, other, mask=(mask, other_mask))
    assert torch.allclose(k1, k2, rtol=0, atol=ROUND_OFF * float(k1.abs().max()))
    assert torch.allclose(t1, t2, rtol=0, atol=ROUND_OFF * float(t1.abs().max()))


def test_padding_nodes_of_graphs_change_nothing():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
    a = torch.rand(3, 4, 4, generator=g, dtype=torch.float64)
    bigger = torch.cat([x, 5 * torch.randn(3, 2, 3, generator=g, dtype=torch.float64)], dim=2)
    arcs = torch.zeros(3, 7, 7, dtype=torch.float64)
    arcs[:, :4, :4] = a
    arcs[:, 4:, :] = 1.0   # arcs out of padding nodes carry nothing: the padding holds zeros
    k, t = GRAPH_TWIN.kernels(x, adjacency=a)
    kp, tp = GRAPH_TWIN.kernels(bigger, adjacency=arcs, mask=lengths_mask([4, 4, 4], 7))
    assert torch.allclose(kp, k, rtol=0, atol=ROUND_OFF * float(k.abs().max()))
    assert torch.allclose(tp, t, rtol=0, atol=ROUND_OFF * float(t.abs().max()))


def test_a_mask_of_all_true_changes_nothing():
    spec = PADDING_INVARIANT["deep"]
    _, batch, _ = padded_batch(3)
    k, t = spec.kernels(batch)
    km, tm = spec.kernels(batch, mask=torch.ones(batch.shape[0], batch.shape[2], dtype=torch.bool))
    assert torch.allclose(km, k, rtol=0, atol=ROUND_OFF * float(k.abs().max()))
    assert torch.allclose(tm, t, rtol=0, atol=ROUND_OFF * float(t.abs().max()))


# -- the same kernels however they are computed ---------------------------------------------------

def test_masked_kernels_are_the_same_in_tiles_on_the_diagonal_and_symmetric():
    spec = PADDING_INVARIANT["deep"]
    _, batch, mask = padded_batch(4, lengths=(8, 2, 5, 7, 1, 4))
    nngp, ntk = spec.kernels(batch, mask=mask)
    assert torch.equal(nngp, nngp.T) and torch.equal(ntk, ntk.T)
    tiled = spec.kernels(batch, mask=mask, tile=2)
    for ours, theirs in zip((nngp, ntk), tiled, strict=True):
        assert torch.allclose(ours, theirs, rtol=0, atol=ROUND_OFF * float(ours.abs().max()))
    dn, dt = spec.kernels(batch, mask=mask, diagonal=True)
    assert torch.allclose(dn, nngp.diagonal(), rtol=0, atol=ROUND_OFF * float(nngp.abs().max()))
    assert torch.allclose(dt, ntk.diagonal(), rtol=0, atol=ROUND_OFF * float(ntk.abs().max()))
    # x1 against x2 = x1: the same numbers as x1 against itself
    kx, tx = spec.kernels(batch, batch.clone(), mask=(mask, mask.clone()))
    assert torch.allclose(kx, nngp, rtol=0, atol=ROUND_OFF * float(nngp.abs().max()))
    assert torch.allclose(tx, ntk, rtol=0, atol=ROUND_OFF * float(ntk.abs().max()))


def test_masked_kernels_in_float32_are_float64s_to_single_precision():
    spec = PADDING_INVARIANT["transformer"]
    _, batch, mask = padded_batch(5)
    k64, t64 = spec.kernels(batch, mask=mask)
    k32, t32 = spec.kernels(batch.float(), mask=mask.numpy(), dtype=torch.float32)
    # a few dozen float32 operations deep: 1e-5 of the largest entry is far above their round-off
    assert (k32.double() - k64).abs().max() <= 1e-5 * k64.abs().max()
    assert (t32.double() - t64).abs().max() <= 1e-5 * t64.abs().max()


def test_numpy_in_numpy_out_and_nothing_the_caller_gave_is_changed():
    spec = PADDING_INVARIANT["transformer"]
    _, batch, mask = padded_batch(6)
    x, m = batch.numpy().copy(), mask.numpy().copy()
    nngp, _ = spec.kernels(x, mask=m)
    assert isinstance(nngp, np.ndarray)
    assert np.array_equal(x, batch.numpy()) and np.array_equal(m, mask.numpy())


# -- finite networks ------------------------------------------------------------------------------

def test_the_finite_network_of_a_padded_sequence_with_its_mask_is_that_of_the_unpadded_one():
    # no positional embeddings: a network built for another length draws other ones
    spec = tn.serial(tn.Conv(3, padding="same"), tn.Erf(), tn.LayerNorm(axis=(1, 2)),
                     *residual(tn.SelfAttention(bias_std=0.1), tn.ReLU(), tn.Conv(1)), tn.LayerNorm(),
                     tn.Conv(1), tn.Gelu(), tn.GlobalAvgPool(), tn.Dense())
    alone, batch, mask = padded_batch(7)
    given = batch.clone()
    net = spec.network(width=16, out_features=2, seed=3, dtype=torch.float64)
    with torch.no_grad():
        out = net(batch, mask=mask)
    assert torch.equal(batch, given)
    for i, x in enumerate(alone):
        with torch.no_grad():
            own = spec.network(width=16, out_features=2, seed=3, dtype=torch.float64)(x)
        assert torch.allclose(out[i], own[0], rtol=0, atol=ROUND_OFF * float(own.abs().max()))


def test_a_finite_network_with_positions_left_gives_zeros_at_padding():
    spec = tn.serial(tn.Conv(3, padding="same"), tn.ReLU(), tn.Conv(1))
    _, batch, mask = padded_batch(8)
    out = spec.network(width=8, out_features=2, seed=0, dtype=torch.float64)(batch, mask=mask)
    assert out.shape == (4, 2, 8)
    assert torch.equal(out * ~mask[:, None], torch.zeros_like(out))
    assert (out[mask[:, None].expand_as(out)] != 0).all()


def test_graph_network_with_padding_nodes_is_that_of_the_graphs_alone():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    a = torch.rand(2, 4, 4, generator=g, dtype=torch.float64)
    bigger = torch.cat([x, torch.randn(2, 3, 2, generator=g, dtype=torch.float64)], dim=2)
    arcs = torch.ones(2, 6, 6, dtype=torch.float64)
    arcs[:, :4, :4] = a
    def net():   # a Conv(1)'s weights do not depend on the number of nodes
        return GRAPH_TWIN.network(width=8, seed=1, dtype=torch.float64)
    padded = net()(bigger, adjacency=arcs, mask=lengths_mask([4, 4], 6))
    assert torch.allclose(padded, net()(x, adjacency=a), rtol=0, atol=1e-13)


# -- errors ---------------------------------------------------------------------------------------

SPEC = SEQUENCE_TWINS["relu_attention"]
X = torch.randn(3, 2, 5, dtype=torch.float64)
M = lengths_mask([5, 2, 3], 5)


@pytest.mark.parametrize(("mask", "error", "match"), [
    (M[:, :4], ValueError, r"mask must have shape \(3, 5\)"),
    (M[:2], ValueError, r"mask must have shape \(3, 5\)"),
    (lengths_mask([5, 0, 3], 5), ValueError, "input 1 has no real position"),
    (M.double() * 0.5, ValueError, "must be boolean"),
    ([[True] * 5] * 3, TypeError, "must be a torch tensor or numpy array, boolean"),
    ((M, M), ValueError, "x2 is None, so give one mask"),
])
def test_a_bad_mask_says_what_is_wrong(mask, error, match):
    with pytest.raises(error, match=match):
        SPEC.kernels(X, mask=mask)


def test_a_mask_of_zeros_and_ones_is_read_as_booleans():
    k, t = SPEC.kernels(X, mask=M)
    k01, t01 = SPEC.kernels(X, mask=M.to(torch.int64))
    assert torch.equal(k, k01) and torch.equal(t, t01)


def test_with_x2_a_mask_is_a_pair():
    with pytest.raises(ValueError, match=r"give one mask for each, a tuple mask=\(M1, M2\)"):
        SPEC.kernels(X, X, mask=M)


def test_vectors_have_no_positions_to_mask():
    with pytest.raises(ValueError, match="vectors"):
        tn.mlp(2).kernels(torch.randn(3, 4, dtype=torch.float64), mask=M)


@pytest.mark.parametrize("layer", [tn.Conv(3), tn.Conv(3, stride=2, padding="same"), tn.AvgPool(2),
                                   tn.ConvTranspose(2, stride=2)])
def test_a_layer_that_changes_the_positions_is_named_under_a_mask(layer):
    spec = tn.serial(tn.Conv(1), tn.ReLU(), layer, tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    with pytest.raises(ArchitectureError, match=r"layer 2 .*changes the positions .*a mask of positions was given"):
        spec.kernels(X, mask=M)
    net = spec.network(width=4, dtype=torch.float64)
    with pytest.raises(ArchitectureError, match="changes the positions"):
        net(X, mask=M)


def test_edge_normalised_pooling_refuses_a_mask():
    spec = tn.serial(tn.Conv(1), tn.ReLU(), tn.AvgPool(3, stride=1, padding="same", normalize_edges=True),
                     tn.GlobalAvgPool(), tn.Dense())
    with pytest.raises(ArchitectureError, match="normalize_edges=True"):
        spec.kernels(X, mask=M)


def test_a_branch_that_changes_the_positions_is_refused_under_a_mask():
    # each branch a single layer: no serial of its own, so the check must see the branches' outputs
    spec = tn.serial(tn.Conv(1), tn.ReLU(), tn.FanOut(2), tn.parallel(tn.Conv(3), tn.Conv(3)), tn.FanInSum(),
                     tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    with pytest.raises(ArchitectureError, match=r"layer 3 .*changes the positions \(5 -> 3\)"):
        spec.kernels(X, mask=M)
    spec.kernels(X)   # without a mask the description is fine
