"""The empirical NTK of models whose forward takes per-example keyword tensors (``forward_kwargs=``):
graph networks with their adjacencies, attention with masks of positions.

Every method that takes them ("jacobian", "ntk_vp", "layerwise", "auto") agrees with the
Jacobian method in every chunking, for x1 alone, x1 against x2 and the diagonal; the Jacobian
method agrees with a contraction of torch.func.jacrev written out here; the operator, the pNTK
and the gradient sketch agree with the kernel they stand for. Tolerance: 1e-10 of the largest
entry. Every side computes the same float64 sums of products of derivatives (at most a few
thousand terms per entry) in another order, so they agree to ~1e-15 relative; the failures this
guards against (a chunk reading another chunk's adjacency, a mask not reaching the vmapped
forward) change entries by O(1).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

import torchntk as tn
from torchntk.empirical import StructuredFallbackWarning
from torchntk.empirical.sketch import SEGMENT_ROWS, _gaussian_rows, gradient_sketch, sketched_ntk
from torchntk.engine.graph import as_adjacency
from torchntk.engine.mask import as_mask

F64 = torch.float64
RTOL = 1e-10
"""Agreement between two computations of the same float64 kernel (module docstring)."""

pytestmark = pytest.mark.usefixtures("one_thread")   # small tensors (tests/conftest.py)

GRAPH = tn.serial(tn.Conv(1), tn.Aggregate(), tn.ReLU(), tn.Conv(1), tn.Aggregate(), tn.GlobalAvgPool(), tn.Dense())
ATTENTION = tn.serial(tn.Conv(1), tn.SelfAttention(query_key_std=0.8, bias_std=0.1), tn.ReLU(), tn.GlobalAvgPool(),
                      tn.Dense())


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _graphs(n: int, seed: int, v: int = 4, c: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """n graphs (n, c, v) and random weighted adjacencies (n, v, v) with about half the arcs."""
    g = _generator(seed)
    x = torch.randn(n, c, v, dtype=F64, generator=g)
    arcs = torch.rand(n, v, v, generator=g) < 0.5
    return x, arcs * torch.rand(n, v, v, dtype=F64, generator=g) + torch.eye(v, dtype=F64)


def _edges(a: torch.Tensor) -> torch.Tensor:
    """The edge list (n, E, 2) of 0/1 adjacencies a (n, v, v), padded with (-1, -1) to one E."""
    lists = [torch.nonzero(m) for m in a]
    size = max(len(e) for e in lists)
    return torch.stack([torch.cat([e, -torch.ones(size - len(e), 2, dtype=torch.int64)]) for e in lists])


def _sequences(n: int, seed: int, length: int = 5, c: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """n sequences (n, c, length), garbage at padding, and masks of lengths length, length - 1, ..."""
    x = torch.randn(n, c, length, dtype=F64, generator=_generator(seed))
    lengths = length - torch.arange(n) % length
    return x, torch.arange(length)[None] < lengths[:, None]


class LinearGraphNet(nn.Module):
    """Two rounds of message passing between nn.Linear layers, on graphs (N, V, C) with
    adjacencies (N, V, V): a model the layer-wise method recognises."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.outer = nn.Linear(3, 6), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inner(adjacency.transpose(1, 2) @ x))
        return self.outer(adjacency.transpose(1, 2) @ h).mean(1)


class MaskedAttention(nn.Module):
    """One head of attention over sequences (N, L, C) whose padding (mask False) gets no weight as a
    key, averaged over the real positions."""

    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value, self.out = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor) -> torch.Tensor:
        logits = self.query(x) @ self.key(x).transpose(1, 2) / 2.0
        weights = logits.masked_fill(~mask[:, None, :], -math.inf).softmax(-1)
        h = self.out(weights @ self.value(x))
        return (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


class PooledGraphNet(nn.Module):
    """A dense network on each graph's mean message, (A^T x) averaged over the nodes: layers at one
    position, where "auto" takes the layer-wise method."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        return self.body((adjacency.transpose(1, 2) @ x).mean(1))


class MaskedGRU(nn.Module):
    """A GRU over sequences (N, L, C) read at the last real position of each (mask True at the
    first lengths): a module vmap cannot batch, so the methods differentiate its batched forward."""

    def __init__(self) -> None:
        super().__init__()
        self.gru, self.out = nn.GRU(3, 4, batch_first=True), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(x)
        last = (mask.sum(1) - 1)[:, None, None].expand(-1, 1, h.shape[2])
        return self.out(torch.gather(h, 1, last)[:, 0])


def _case(name: str):
    """(model, (x1, kw1), (x2, kw2)) for one of the models with keyword tensors."""
    if name in ("graph", "graph_edges"):
        model = GRAPH.network(width=6, out_features=3, seed=0, dtype=F64)
        (x1, a1), (x2, a2) = _graphs(5, seed=1), _graphs(3, seed=2)
        if name == "graph_edges":
            a1, a2 = _edges(a1 > 0), _edges(a2 > 0)
        return model, (x1, {"adjacency": a1}), (x2, {"adjacency": a2})
    if name == "attention":
        model = ATTENTION.network(width=8, out_features=2, seed=0, dtype=F64)
        (x1, m1), (x2, m2) = _sequences(5, seed=3), _sequences(3, seed=4)
        return model, (x1, {"mask": m1}), (x2, {"mask": m2})
    torch.manual_seed(0)
    if name in ("linear_graph", "pooled_graph"):
        model = (LinearGraphNet() if name == "linear_graph" else PooledGraphNet()).to(F64)
        (x1, a1), (x2, a2) = _graphs(5, seed=5), _graphs(3, seed=6)
        return model, (x1.transpose(1, 2), {"adjacency": a1}), (x2.transpose(1, 2), {"adjacency": a2})
    model = (MaskedAttention() if name == "masked_attention" else MaskedGRU()).to(F64)
    (x1, m1), (x2, m2) = _sequences(5, seed=7), _sequences(3, seed=8)
    return model, (x1.transpose(1, 2), {"mask": m1}), (x2.transpose(1, 2), {"mask": m2})


CASES = ("graph", "graph_edges", "attention", "linear_graph", "pooled_graph", "masked_attention", "gru")
LAYERWISE = ("linear_graph", "pooled_graph", "masked_attention")   # nn.Linear layers: the layer-wise rules apply


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert (a - b).abs().max() <= RTOL * b.abs().max(), float((a - b).abs().max() / b.abs().max())


def _quiet(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructuredFallbackWarning)
        return tn.empirical_ntk(**kwargs)


def _hand_written(model, x1, kw1, x2, kw2) -> torch.Tensor:
    """sum_p d f_a(x1_i; kw1_i) / d theta_p  d f_b(x2_j; kw2_j) / d theta_p by jacrev of the batched
    forward (the rows are independent), (N1, N2, k, k)."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def jacobian(x, kw):
        jac = jacrev(lambda p: functional_call(model, p, (x,), kw))(params)
        return torch.cat([j.reshape(x.shape[0], j.shape[1], -1) for j in jac.values()], dim=2)

    return torch.einsum("iap,jbp->ijab", jacobian(x1, kw1), jacobian(x2, kw2))


@pytest.mark.parametrize("name", ["graph", "graph_edges", "attention", "linear_graph", "gru"])
def test_the_jacobian_method_is_the_written_out_contraction(name):
    model, (x1, kw1), (x2, kw2) = _case(name)
    kernel = tn.empirical_ntk(model, x1, x2, method="jacobian", forward_kwargs=(kw1, kw2), batch_size=2)
    _close(kernel, _hand_written(model, x1, kw1, x2, kw2))
    # and the keywords matter: reversed arcs, or no padding, give another kernel
    other = {k: torch.ones_like(v) if v.dtype == torch.bool else v.flip(-1) if not v.is_floating_point()
             else v.transpose(1, 2) for k, v in kw2.items()}
    assert (kernel - _hand_written(model, x1, kw1, x2, other)).abs().max() > 1e-3 * kernel.abs().max()


@pytest.mark.parametrize("name", CASES)
def test_every_method_agrees_with_the_jacobian_in_every_chunking(name):
    model, (x1, kw1), (x2, kw2) = _case(name)
    methods = ["auto", "ntk_vp", *(["layerwise"] if name in LAYERWISE else [])]
    for outputs in ("full", "trace"):
        pair = tn.empirical_ntk(model, x1, x2, method="jacobian", outputs=outputs, forward_kwargs=(kw1, kw2))
        square = tn.empirical_ntk(model, x1, method="jacobian", outputs=outputs, forward_kwargs=kw1)
        for method in ["jacobian", *methods]:
            for batch_size in (None, 2):
                _close(_quiet(model=model, x1=x1, x2=x2, method=method, outputs=outputs, batch_size=batch_size,
                              forward_kwargs=(kw1, kw2)), pair)
                _close(_quiet(model=model, x1=x1, method=method, outputs=outputs, batch_size=batch_size,
                              forward_kwargs=kw1), square)
            diagonal = _quiet(model=model, x1=x1, method=method, outputs=outputs, diagonal=True, batch_size=2,
                              forward_kwargs=kw1)
            rows = torch.arange(x1.shape[0])
            _close(diagonal, square[rows, rows])


@pytest.mark.parametrize(("name", "used", "autodiff"), [("graph", "jacobian", "per-sample"),
                                                       ("linear_graph", "jacobian", "per-sample"),
                                                       ("pooled_graph", "layerwise", None),
                                                       ("gru", "jacobian", "batched")])
def test_auto_says_why_it_left_the_structured_path(name, used, autodiff):
    model, (x1, kw1), _ = _case(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, info = tn.empirical_ntk(model, x1, forward_kwargs=kw1, return_info=True)
    assert (info.method_used, info.autodiff) == (used, autodiff)
    fallbacks = [str(w.message) for w in caught if w.category is StructuredFallbackWarning]
    if used == "jacobian":
        assert "forward_kwargs" in info.fallback_reason
        assert len(fallbacks) == 1 and "forward_kwargs" in fallbacks[0]
    else:
        assert info.fallback_reason is None and not fallbacks


@pytest.mark.parametrize("name", ["graph", "masked_attention"])
def test_pntk_operator_and_nngp_take_the_keywords(name):
    model, (x1, kw1), (x2, kw2) = _case(name)
    full = tn.empirical_ntk(model, x1, x2, method="jacobian", forward_kwargs=(kw1, kw2))
    k = full.shape[-1]
    _close(_quiet(model=model, x1=x1, x2=x2, outputs="pntk", forward_kwargs=(kw1, kw2)), full.sum((2, 3)) / k)
    square = tn.empirical_ntk(model, x1, method="jacobian", forward_kwargs=kw1)
    n = x1.shape[0]
    for outputs, matrix in (("full", square.permute(0, 2, 1, 3).reshape(n * k, n * k)),
                            ("pntk", square.sum((2, 3)) / k)):
        op = tn.ntk_operator(model, x1, outputs=outputs, forward_kwargs=kw1, batch_size=2)
        v = torch.randn(op.shape[0], 2, dtype=F64, generator=_generator(0))
        _close(op @ v, matrix @ v)
    with torch.no_grad():
        f1, f2 = model(x1, **kw1), model(x2, **kw2)
    _close(tn.empirical_nngp(model, x1, x2, forward_kwargs=(kw1, kw2), batch_size=2),
           f1[:, None, :, None] * f2[None, :, None, :])


def test_the_gradient_sketch_is_the_jacobian_times_its_gaussian():
    model, (x1, kw1), (x2, kw2) = _case("graph")
    dim, seed = 7, 3
    phi = gradient_sketch(model, x1, dim=dim, seed=seed, forward_kwargs=kw1, batch_size=2)
    params = {n: p.detach() for n, p in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x1,), kw1))(params)
    assert all(p.numel() <= SEGMENT_ROWS for p in params.values())   # one segment of R per tensor
    want = sum(j.reshape(x1.shape[0], j.shape[1], -1) @ _gaussian_rows(seed, n, 0, params[n].numel(), dim, F64,
                                                                       x1.device)
               for n, j in jac.items()) / math.sqrt(dim)
    _close(phi, want)
    phi2 = gradient_sketch(model, x2, dim=dim, seed=seed, forward_kwargs=kw2)
    _close(sketched_ntk(model, x1, x2, dim=dim, seed=seed, forward_kwargs=(kw1, kw2)),
           torch.einsum("iad,jbd->ijab", phi, phi2))


def test_numpy_keywords_give_numpy_and_nothing_given_is_changed():
    model, (x1, kw1), (x2, kw2) = _case("attention")
    before = {k: v.clone() for k, v in kw1.items()}
    want = tn.empirical_ntk(model, x1, x2, method="jacobian", outputs="trace", forward_kwargs=(kw1, kw2))
    got = tn.empirical_ntk(model, x1.numpy(), x2.numpy(), method="jacobian", outputs="trace",
                           forward_kwargs=({"mask": kw1["mask"].numpy()}, {"mask": kw2["mask"].numpy()}))
    assert isinstance(got, np.ndarray)
    _close(torch.from_numpy(got), want)
    assert all(torch.equal(kw1[k], before[k]) for k in kw1)


def test_a_padded_sequence_with_its_mask_has_the_ntk_of_the_unpadded_one():
    model, (x1, kw1), _ = _case("attention")
    kernel = tn.empirical_ntk(model, x1, method="ntk_vp", forward_kwargs=kw1)
    for i, row in enumerate(kw1["mask"]):
        length = int(row.sum())
        alone = ATTENTION.network(width=8, out_features=2, seed=0, dtype=F64)   # no positional embeddings
        _close(tn.empirical_ntk(alone, x1[i:i + 1, :, :length], method="jacobian")[0, 0], kernel[i, i])


# -- the side inputs' checks under torch.func ------------------------------------------------------

def test_side_inputs_keep_their_shape_checks_under_vmap():
    x, a = _graphs(3, seed=0)
    m = torch.ones(3, 4, dtype=torch.bool)
    # the values cannot be read under vmap: the checks of values step aside, the conversion stays
    out = vmap(lambda b: as_adjacency(b[None], "adjacency", 1, 4, dtype=F64, device=x.device))(a)
    assert torch.equal(out[:, 0], a)
    assert torch.equal(vmap(lambda b: as_mask(b[None], "mask", 1, (4,), device=x.device))(m)[:, 0], m)
    with pytest.raises(ValueError, match=r"adjacency is over 4 nodes but the inputs \(N, C, V\) have V = 5"):
        vmap(lambda b: as_adjacency(b[None], "adjacency", 1, 5, dtype=F64, device=x.device))(a)
    with pytest.raises(ValueError, match=r"mask must have shape \(1, 5\)"):
        vmap(lambda b: as_mask(b[None], "mask", 1, (5,), device=x.device))(m)
    # and outside a transform the values are still checked
    with pytest.raises(ValueError, match="no real position"):
        as_mask(torch.zeros(1, 4, dtype=torch.bool), "mask", 1, (4,), device=x.device)


# -- errors -----------------------------------------------------------------------------------------

def test_bad_keywords_say_what_is_wrong():
    model, (x1, kw1), (x2, kw2) = _case("graph")
    a1 = kw1["adjacency"]
    cases = [
        (dict(x2=None, forward_kwargs={"adjacency": a1[:4]}), ValueError,
         r"forward_kwargs\['adjacency'\] has shape \(4, 4, 4\), but x1 holds 5 inputs"),
        (dict(x2=x2, forward_kwargs=(kw1, {"adjacency": a1})), ValueError,
         r"forward_kwargs\[1\]\['adjacency'\] has shape \(5, 4, 4\), but x2 holds 3 inputs"),
        (dict(x2=None, forward_kwargs=(kw1, kw2)), ValueError, "x2 is None, so forward_kwargs is one dict"),
        (dict(x2=x2, forward_kwargs=kw1), ValueError, r"forward_kwargs is a pair \(kw1, kw2\)"),
        (dict(x2=None, forward_kwargs={"adjacency": torch.tensor(1.0, dtype=F64)}), ValueError,
         "a keyword tensor is per example"),
        (dict(x2=None, forward_kwargs={"adjacency": 0.5}), TypeError, "is a float, not a per-example tensor"),
        (dict(x2=None, forward_kwargs={"adjacency": a1.float()}), TypeError, "has dtype torch.float32"),
        (dict(x2=None, forward_kwargs=[("adjacency", a1)]), ValueError, "x2 is None"),
        (dict(x2=None, forward_kwargs={3: a1}), TypeError, "has the key 3"),
        (dict(x2=x2, forward_kwargs=(kw1, {"mask": torch.ones(3, 4, dtype=torch.bool)})), ValueError,
         "must name the same keywords"),
        (dict(x2=None, forward_kwargs=kw1, method="structured"), ValueError,
         "method='structured' does not apply: the model takes forward_kwargs"),
        (dict(x2=None, forward_kwargs={"adjacency": a1[:, :3, :3]}), ValueError,
         r"adjacency is over 3 nodes but the inputs \(N, C, V\) have V = 4"),
    ]
    for options, error, match in cases:
        with pytest.raises(error, match=match):
            tn.empirical_ntk(model, x1, **{"method": "jacobian", **options})
    with pytest.raises(ValueError, match="x2 is None, so forward_kwargs is one dict"):
        tn.ntk_operator(model, x1, forward_kwargs=(kw1, kw1))
    with pytest.raises(ValueError, match=r"has shape \(4, 4, 4\), but x1 holds 5 inputs"):
        gradient_sketch(model, x1, dim=2, seed=0, forward_kwargs={"adjacency": a1[:4]})
    with pytest.raises(ValueError, match="which need the graphs' adjacency"):
        tn.empirical_ntk(model, x1, method="jacobian")


@pytest.mark.parametrize("method", ["jacobian", "ntk_vp"])
def test_a_torchntk_network_checks_the_values_of_every_row_before_its_transforms(method):
    # the vmapped forwards read only the shapes of the side inputs: the values of every row are
    # checked once, untransformed, so a bad row far from the first is refused and never a NaN
    model, (x1, kw1), _ = _case("graph")
    bad = kw1["adjacency"].clone()
    bad[4, 1, 2] = math.nan
    with pytest.raises(ValueError, match="adjacency holds a NaN or an infinite weight"):
        tn.empirical_ntk(model, x1, method=method, forward_kwargs={"adjacency": bad})
    with pytest.raises(ValueError, match="adjacency holds a NaN or an infinite weight"):
        model.check_side_inputs(x1, adjacency=bad)   # the network's own check, without a forward
    model.check_side_inputs(x1, adjacency=kw1["adjacency"])
    model, (x1, kw1), _ = _case("attention")
    empty = kw1["mask"].clone()
    empty[4] = False
    with pytest.raises(ValueError, match="mask: input 4 has no real position"):
        tn.empirical_ntk(model, x1, method=method, forward_kwargs={"mask": empty})
    with pytest.raises(ValueError, match="mask: input 4 has no real position"):
        tn.ntk_operator(model, x1, forward_kwargs={"mask": empty})
