"""Graph networks: Aggregate (neural-tangents' stax.Aggregate with its dense pattern) and the
adjacency side input, through the kernels (tiles, diagonal, float32), finite networks and JSON.

Reference values are neural-tangents 0.6.5's, stored by tests/fixtures/neural_tangents/make_layers.py
(GRAPH_CASES; the suite never needs JAX). Tolerance 1e-12 relative to the largest entry: both
sides compute the same float64 matrix products and arc-cosine / arcsine closed forms in different
summation orders, so they agree to round-off and no more; as in test_neural_tangents_layers.py,
neural-tangents' ReLU angle arctan2(sqrt(q q' - c^2), c) is off by up to ~1e-8 where q q' - c^2 is
round-off, so the diagonal of a kernel of x against itself is compared at 1e-8.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from nt_reference import assert_matches, channels_first, load

import torchntk as tn
from torchntk.engine.signal import ArchitectureError
from torchntk.networks.modules import Aggregate as AggregateModule

# twins of GRAPH_CASES in make_layers.py: neural-tangents' Dense on (N, V, C) acts on each node,
# which is Conv((1,)) on (N, C, V) here
GRAPH_TWINS = {
    "graph_gcn_flatten": tn.serial(tn.Conv((1,)), tn.Aggregate(), tn.ReLU(), tn.Conv((1,)), tn.Aggregate(),
                                   tn.Flatten(), tn.Dense()),
    "graph_gcn_pool": tn.serial(tn.Conv((1,)), tn.Aggregate(), tn.ReLU(), tn.Conv((1,)), tn.Aggregate(), tn.ReLU(),
                                tn.GlobalAvgPool(), tn.Dense()),
    "graph_input": tn.serial(tn.Aggregate(), tn.Conv((1,)), tn.Erf(), tn.Aggregate(), tn.Conv((1,)), tn.Aggregate(),
                             tn.GlobalAvgPool(), tn.Dense()),
}


def gcn():
    return GRAPH_TWINS["graph_gcn_pool"]


def _graphs(n: int, v: int = 5, c: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n graphs (n, c, v) and weighted directed adjacencies (n, v, v), self-loops included."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, v))
    a = (rng.random((n, v, v)) < 0.5) * rng.uniform(0.5, 1.5, (n, v, v)) + np.eye(v)
    return torch.from_numpy(x), torch.from_numpy(a)


@pytest.fixture(scope="module")
def reference():
    return load()


@pytest.mark.parametrize("name", sorted(GRAPH_TWINS))
def test_kernels_equal_neural_tangents(name, reference):
    spec = GRAPH_TWINS[name]
    x1, x2 = channels_first(reference["g1"]), channels_first(reference["g2"])
    a1, a2 = torch.from_numpy(reference["a1"]), torch.from_numpy(reference["a2"])
    for tag, second, adjacency in (("", x2, (a1, a2)), ("_self", None, a1)):
        nngp, ntk = spec.kernels(x1, second, adjacency=adjacency)
        assert_matches(reference, name, tag, nngp, ntk)


def test_the_fixture_covers_every_twin(reference):
    made = {key.rsplit("_", 1)[0] for key in reference if key.startswith("graph_") and key.endswith("_nngp")
            and not key.endswith("_self_nngp")}
    assert made == set(GRAPH_TWINS)


def test_the_identity_adjacency_changes_nothing_exactly():
    x, _ = _graphs(4)
    eye = torch.eye(5, dtype=torch.float64).expand(4, 5, 5)
    with_ = tn.serial(tn.Conv((1,)), tn.Aggregate(), tn.ReLU(), tn.Aggregate(), tn.Conv((1,)), tn.Aggregate(),
                      tn.GlobalAvgPool(), tn.Dense())
    without = tn.serial(tn.Conv((1,)), tn.ReLU(), tn.Conv((1,)), tn.GlobalAvgPool(), tn.Dense())
    # products by exact zeros and ones, summed with zeros: no rounding anywhere
    for a, b in zip(with_.kernels(x, adjacency=eye), without.kernels(x), strict=True):
        assert torch.equal(a, b)
    x2, _ = _graphs(3, seed=1)
    eye2 = torch.eye(5, dtype=torch.float64).expand(3, 5, 5)
    for a, b in zip(with_.kernels(x, x2, adjacency=(eye, eye2)), without.kernels(x, x2), strict=True):
        assert torch.equal(a, b)
    net_with = with_.network(width=16, seed=3, dtype=torch.float64)
    net_without = without.network(width=16, seed=3, dtype=torch.float64)
    assert torch.equal(net_with(x, adjacency=eye), net_without(x))


def test_tiles_diagonal_float32_and_exact_symmetry():
    spec = gcn()
    x1, a1 = _graphs(7)
    x2, a2 = _graphs(4, seed=1)
    whole = spec.kernels(x1, x2, adjacency=(a1, a2))
    # the adjacency rows travel with their inputs whatever the tiling; the same sums per pair, so
    # only the batching of the products can differ: round-off, 1e-13 relative
    for tile in (1, 2, 3):
        for a, b in zip(spec.kernels(x1, x2, adjacency=(a1, a2), tile=tile), whole, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13 * b.abs().max().item())
    nngp, ntk = spec.kernels(x1, adjacency=a1)
    assert torch.equal(nngp, nngp.T) and torch.equal(ntk, ntk.T)
    tiled = spec.kernels(x1, adjacency=a1, tile=3)
    assert torch.equal(tiled[0], tiled[0].T) and torch.equal(tiled[1], tiled[1].T)
    explicit = spec.kernels(x1, x1, adjacency=(a1, a1))
    for a, b, c in zip((nngp, ntk), tiled, explicit, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13 * a.abs().max().item())
        torch.testing.assert_close(a, c, rtol=1e-13, atol=1e-13 * a.abs().max().item())
    # the diagonal path: each graph with itself, in the rows' own adjacency
    diag_nngp, diag_ntk = spec.kernels(x1, adjacency=a1, diagonal=True)
    torch.testing.assert_close(diag_nngp, nngp.diagonal(), rtol=1e-13, atol=0)
    torch.testing.assert_close(diag_ntk, ntk.diagonal(), rtol=1e-13, atol=0)
    torch.testing.assert_close(spec.nngp(x1, adjacency=a1, diagonal=True), diag_nngp, rtol=1e-13, atol=0)
    torch.testing.assert_close(spec.ntk(x1, x2, adjacency=(a1, a2)), whole[1], rtol=1e-13, atol=0)
    # float32: the same sums in single precision, a few hundred ulps over two Aggregates and ReLUs
    single = spec.kernels(x1.float(), x2.float(), adjacency=(a1.float(), a2.float()), dtype=torch.float32)
    for a, b in zip(single, whole, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_numpy_in_numpy_out_and_inputs_left_alone():
    spec = gcn()
    x, a = _graphs(3)
    before = a.clone()
    nngp = spec.nngp(x.numpy(), adjacency=a.numpy())
    assert isinstance(nngp, np.ndarray)
    np.testing.assert_allclose(nngp, spec.nngp(x, adjacency=a).numpy(), rtol=1e-14, atol=0)
    # bool adjacencies are arcs of weight 1
    binary = a > 1.0
    torch.testing.assert_close(spec.nngp(x, adjacency=binary), spec.nngp(x, adjacency=binary.double()),
                               rtol=0, atol=0)
    assert torch.equal(a, before)


def _output_moments(spec, x, a, width: int, seeds: int, out: int):
    """Mean over networks of each network's output covariance (averaged over its output units) and
    its standard error, taken across networks (the units of one network share its hidden layers)."""
    per_network = []
    for seed in range(seeds):
        f = spec.network(width=width, out_features=out, seed=seed, dtype=torch.float64)(x, adjacency=a)
        per_network.append((f @ f.T / out).detach())
    per_network = torch.stack(per_network)
    return per_network.mean(0), per_network.std(0) / seeds ** 0.5


def test_finite_networks_outputs_have_the_nngp_covariance():
    spec = gcn()
    x, a = _graphs(4)
    a = a / a.sum(dim=1, keepdim=True)   # mean over predecessors: kernels of order one
    mean, stderr = _output_moments(spec, x, a, width=128, seeds=100, out=32)
    nngp = spec.nngp(x, adjacency=a)
    z = (mean - nngp) / stderr
    # 10 distinct entries; |z| < 4.5 fails by chance with probability ~1e-4 if the kernel is right.
    # The finite-width bias at 128 channels is O(1/128), inside the few-percent error bars.
    assert z.abs().max() < 4.5, z
    # power: a kernel 20% off is rejected by the same test
    assert ((mean - 1.2 * nngp) / stderr).abs().max() > 4.5
    # and so is the kernel of the graphs' transposed adjacencies (arcs reversed)
    reversed_ = spec.nngp(x, adjacency=a.transpose(1, 2))
    assert ((mean - reversed_) / stderr).abs().max() > 4.5


def test_the_finite_module_is_message_passing():
    x, a = _graphs(2)
    out = AggregateModule()(x, adjacency=a)
    # out[n, c, j] = sum_i x[n, c, i] a[n, i, j], written out for one entry
    assert torch.isclose(out[1, 2, 3], sum(x[1, 2, i] * a[1, i, 3] for i in range(5)), rtol=1e-14)
    assert torch.equal(out, x @ a)


def test_json_round_trip():
    spec = GRAPH_TWINS["graph_input"]
    data = json.loads(json.dumps(spec.to_dict()))
    assert {"layer": "Aggregate"} in data["network"]["layers"]
    back = tn.from_dict(data)
    assert repr(back) == repr(spec)
    x, a = _graphs(3)
    for k1, k2 in zip(back.kernels(x, adjacency=a), spec.kernels(x, adjacency=a), strict=True):
        assert torch.equal(k1, k2)
    assert torch.equal(back.network(width=8, seed=1, dtype=torch.float64)(x, adjacency=a),
                       spec.network(width=8, seed=1, dtype=torch.float64)(x, adjacency=a))
    with pytest.raises(ValueError, match="Aggregate takes no argument"):
        tn.from_dict({"layer": "serial", "layers": [{"layer": "Aggregate", "axis": 1}, {"layer": "Dense"}]})


def test_errors_name_what_is_wrong():
    spec = gcn()
    x, a = _graphs(3)
    x2, a2 = _graphs(2, seed=1)
    with pytest.raises(ValueError, match=r"Aggregate\(\) reads the graphs' adjacency, but none was given"):
        spec.kernels(x)
    with pytest.raises(ValueError, match="no layer of this description reads it"):
        tn.serial(tn.Conv((1,)), tn.GlobalAvgPool(), tn.Dense()).kernels(x, adjacency=a)
    with pytest.raises(ValueError, match="is over 4 nodes but the inputs .* have V = 5"):
        spec.kernels(x, adjacency=a[:, :4, :4])
    with pytest.raises(ValueError, match=r"must have shape \(N, V, V\)"):
        spec.kernels(x, adjacency=a[:, :, :4])
    with pytest.raises(ValueError, match="holds 2 graphs but its inputs hold 3"):
        spec.kernels(x, adjacency=a[:2])
    with pytest.raises(ValueError, match=r"read as an edge list \(N, E, 2\).*A.to\(torch.float64\)"):
        spec.kernels(x, adjacency=a.long())
    with pytest.raises(ValueError, match="an arc to or from node 5, but the inputs .* have V = 5"):
        spec.kernels(x, adjacency=torch.tensor([[[0, 5]]] * 3))
    with pytest.raises(TypeError, match="real weights"):
        spec.kernels(x, adjacency=a.to(torch.complex128))
    with pytest.raises(TypeError, match="torch tensor or numpy array"):
        spec.kernels(x, adjacency=a.tolist())
    with pytest.raises(ValueError, match="NaN or an infinite"):
        spec.kernels(x, adjacency=torch.where(a > 1.2, float("nan"), a))
    with pytest.raises(ValueError, match=r"adjacency=\(A1, A2\)"):
        spec.kernels(x, x2, adjacency=a)
    with pytest.raises(ValueError, match="give one adjacency for x1"):
        spec.kernels(x, adjacency=(a, a))
    with pytest.raises(ValueError, match=r"adjacency\[1\] \(of x2\) holds 3 graphs"):
        spec.kernels(x, x2, adjacency=(a, a))
    with pytest.raises(TypeError, match="unexpected option"):
        spec.nngp(x, adjacencies=a)
    # a layer that changes the number of nodes before Aggregate: the error names the layer
    strided = tn.serial(tn.Conv((2,), stride=2), tn.Aggregate(), tn.GlobalAvgPool(), tn.Dense())
    with pytest.raises(ArchitectureError, match=r"layer 1 \(Aggregate\(\)\): the graphs have 5 nodes .* input has 2"):
        strided.kernels(x, adjacency=a)
    images = tn.serial(tn.Conv((1, 1)), tn.Aggregate(), tn.GlobalAvgPool(), tn.Dense())
    with pytest.raises(ValueError, match=r"Aggregate\(\) takes graphs \(N, C, V\)"):
        images.kernels(torch.zeros(2, 1, 3, 3, dtype=torch.float64), adjacency=a[:2])
    with pytest.raises(ArchitectureError, match=r"Aggregate needs graphs"):
        tn.serial(tn.Dense(), tn.Aggregate(), tn.Dense()).analyse((3,))
    net = spec.network(width=8, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"net\(x, adjacency=A\)"):
        net(x)
    with pytest.raises(ValueError, match="is over 4 nodes"):
        net(x, adjacency=a[:, :4, :4])
    with pytest.raises(ValueError, match="no Aggregate layer to read it"):
        tn.serial(tn.Conv((1,)), tn.GlobalAvgPool(), tn.Dense()).network(width=4)(x.float(), adjacency=a)


def _edge_list(a: torch.Tensor, arcs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An edge list (N, arcs, 2) drawn at random, repeats and padding included, and its dense
    adjacency (N, V, V): the number of times each arc i -> j is listed."""
    n, v, _ = a.shape
    gen = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, v, (n, arcs, 2), generator=gen)
    edges[:, 0] = edges[:, 1]                                  # a repeated arc: weight 2
    edges[:, -1, 1] = -1                                       # padding, at either end
    edges[:, -2, 0] = -1
    dense = torch.zeros(n, v, v, dtype=torch.float64)
    for graph in range(n):   # the definition, entry by entry (test data only)
        for tail, head in edges[graph].tolist():
            if tail >= 0 and head >= 0:
                dense[graph, tail, head] += 1
    return edges, dense


def test_an_edge_list_gives_the_kernels_and_networks_of_its_dense_adjacency():
    spec = GRAPH_TWINS["graph_input"]
    x1, a1 = _graphs(5)
    x2, a2 = _graphs(3, seed=1)
    e1, d1 = _edge_list(a1, 9, seed=2)
    e2, d2 = _edge_list(a2, 6, seed=3)
    # the same sums of products, gathered and scattered instead of multiplied by a dense matrix:
    # round-off only, 1e-13 relative
    cases = [((x1, x2), (e1, e2), (d1, d2), {}), ((x1, x2), (e1, d2), (d1, d2), {"tile": 2}),
             ((x1,), e1, d1, {}), ((x1,), e1, d1, {"tile": 2}), ((x1,), e1, d1, {"diagonal": True})]
    for inputs, edges, dense, options in cases:
        for a, b in zip(spec.kernels(*inputs, adjacency=edges, **options),
                        spec.kernels(*inputs, adjacency=dense, **options), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13 * b.abs().max().item())
    nngp = spec.nngp(x1, adjacency=e1)
    assert torch.equal(nngp, nngp.T)
    net = spec.network(width=16, seed=4, dtype=torch.float64)
    torch.testing.assert_close(net(x1, adjacency=e1), net(x1, adjacency=d1), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(AggregateModule()(x1, adjacency=e1), x1 @ d1, rtol=1e-14, atol=1e-14)
    # numpy edge lists too; the caller's tensor is left alone
    before = e1.clone()
    torch.testing.assert_close(spec.nngp(x1.numpy(), adjacency=e1.numpy()), nngp.numpy(), rtol=0, atol=0)
    assert torch.equal(e1, before)


def test_aggregate_inside_branches_and_gradients_in_the_weights():
    # a residual graph block: the adjacency reaches layers inside parallel branches, in the
    # kernels and in the finite network
    block = tn.serial(tn.FanOut(2), tn.parallel(tn.serial(tn.ReLU(), tn.Conv((1,)), tn.Aggregate()), tn.Identity()),
                      tn.FanInSum())
    spec = tn.serial(tn.Conv((1,)), block, tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    plain = tn.serial(tn.Conv((1,)), tn.serial(tn.FanOut(2), tn.parallel(tn.serial(tn.ReLU(), tn.Conv((1,))),
                                                                          tn.Identity()), tn.FanInSum()),
                      tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    x, a = _graphs(3)
    eye = torch.eye(5, dtype=torch.float64).expand(3, 5, 5)
    for k1, k2 in zip(spec.kernels(x, adjacency=eye), plain.kernels(x), strict=True):
        assert torch.equal(k1, k2)
    assert not torch.allclose(spec.nngp(x, adjacency=a), plain.nngp(x))
    assert torch.equal(spec.network(width=8, seed=2, dtype=torch.float64)(x, adjacency=eye),
                       plain.network(width=8, seed=2, dtype=torch.float64)(x))
    # the kernels are differentiable in the arc weights (finite differences, gradcheck's defaults)
    weights = a[:2].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: spec.nngp(x[:2], adjacency=w), (weights,))
