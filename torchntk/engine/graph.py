r"""Graph networks: `Aggregate`, one step of message passing over each input's own graph.

A graph input is (N, C, V): C channels on each of V nodes (one spatial axis, the nodes, in
PyTorch's channels-first layout). Its adjacency is a side input, (N, V, V), with ``A[n, i, j]``
the weight of the arc i -> j in graph n (any real weights; zero for no arc). `Aggregate` replaces
each node's features by the weighted sum over its predecessors,

.. math::

    \operatorname{out}_n[:, j] = \sum_i x_n[:, i]\, A_n[i, j], \qquad \text{i.e. } x_n A_n,

a linear map without parameters (neural-tangents' ``stax.Aggregate()`` with its dense pattern).
The adjacency may also be an integer edge list (N, E, 2), the (tail, head) of each arc, an arc
listed k times having weight k and an entry with a negative end being padding (neural-tangents'
SPARSE pattern): the same sums by a gather and a scatter-add, O(V + E) per node slice instead of
O(V^2) (`aggregate`).
On kernels, for two inputs with adjacencies :math:`A, A'` and every pair of nodes :math:`(j, j')`,

.. math::

    K'(x, x')[j, j'] = \sum_{i, i'} A[i, j]\, K(x, x')[i, i']\, A'[i', j'], \qquad
    K' = A^\top K A',

and the NTK the same (no parameters of its own). It needs the covariances between all pairs of
nodes below it (the full layout), which a Dense acting on each node (``Conv(1)``) passes on.

Side inputs. The adjacency is not part of the description (it differs from input to input), so
it travels beside the inputs: ``spec.kernels(x1, x2, adjacency=(A1, A2))`` (or
``spec.kernels(x1, adjacency=A1)``) hands it to the tile walk, which slices it with each tile's
rows and columns into ``state.side["adjacency"]`` (`torchntk.engine.state`), and the finite
network takes ``net(x, adjacency=A)``. A layer names the side inputs it reads in
``side_inputs``; the description collects them, so a missing side input, or one given to a
description that reads none, is an error before any work, and during the signal check each
reading layer compares the side input's shape with its own input (`signal.side_shapes`). Any
other per-input data (a mask of positions, say) can use the same path under its own name.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from .._inputs import as_side_tensor, is_traced
from ..networks import modules
from .base import BuildContext, Layer
from .signal import Signal, fail, side_shape
from .state import KernelState

ADJACENCY = "adjacency"
"""The side input's name, as `Serial.kernels` and the finite network take it (``adjacency=``)."""


class Aggregate(Layer):
    r"""One step of message passing on graphs (N, C, V) with adjacencies (N, V, V):
    :math:`\operatorname{out}_n[:, j] = \sum_i x_n[:, i]\, A_n[i, j]` and on kernels
    :math:`K'(x, x') = A^\top K(x, x')\, A'` over the pairs of nodes (see the module docstring).

    The adjacency is given with the inputs: ``spec.kernels(x1, x2, adjacency=(A1, A2))``,
    ``spec.kernels(x1, adjacency=A1)``, ``net(x, adjacency=A)``; dense (N, V, V) or an integer
    edge list (N, E, 2) of (tail, head) pairs (`as_adjacency`). The identity adjacency leaves
    the input unchanged.
    """

    side_inputs = (ADJACENCY,)

    def __repr__(self) -> str:
        return "Aggregate()"

    def to_dict(self) -> dict[str, Any]:
        return {"layer": "Aggregate"}

    def signal(self, sig: Signal, where: str) -> Signal:
        if isinstance(sig, tuple):
            raise fail(where, "Aggregate got branches; merge them first with FanInSum() or FanInConcat().")
        if sig.spatial != 1 or sig.flat:
            raise fail(where, f"Aggregate needs graphs, inputs (N, C, V) with C channels on V nodes; it got "
                              f"{sig.describe()}.")
        shape = side_shape(ADJACENCY)   # (V,): the graphs' nodes, which the adjacency was checked against
        if shape is not None and tuple(shape) != sig.shape:
            raise fail(where, f"the graphs have {shape[0]} nodes (the inputs' V, which the adjacency is over), but "
                              f"this layer's input has {sig.shape[0]}: Aggregate must see every node (a strided Conv "
                              "or a pooling before it changes V).")
        return sig.after_linear()

    def need(self, full_out):
        return True

    def kernel(self, state: KernelState, full_out) -> KernelState:
        if ADJACENCY not in state.side:
            raise ValueError(f"{self!r} needs the graphs' adjacency: pass adjacency= with the inputs "
                             "(spec.kernels(x1, x2, adjacency=(A1, A2))).")
        rows, cols = state.side[ADJACENCY]

        def pairs(t: Tensor | None) -> Tensor | None:
            if t is None or t.dim() == 0:   # the input's NTK is a 0-dim zero, and stays zero
                return t
            if state.prefix == 1:
                return selves(t, rows)
            # (n1, n2, V, V'): the rows' adjacency on the first node axis, the columns' on the second
            return aggregate(aggregate(t, rows, batch_axis=0, axis=2), cols, batch_axis=1, axis=3)

        def selves(t: Tensor | None, a: Tensor) -> Tensor | None:
            if t is None:
                return None
            return aggregate(aggregate(t, a, batch_axis=0, axis=1), a, batch_axis=0, axis=2)

        out = replace(state, nngp=pairs(state.nngp), ntk=pairs(state.ntk), self1=selves(state.self1, rows),
                      self2=selves(state.self2, cols))
        return out if full_out else out.to_diagonal()

    def build(self, sig: Signal, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        return modules.Aggregate(), channels


def as_adjacency(a: Any, name: str, count: int, nodes: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``a`` checked and converted, a new tensor on ``device`` (never the caller's own): a torch
    tensor or numpy array, either

    - dense (count, nodes, nodes), real or bool (True: an arc of weight 1), finite: returned in
      ``dtype``;
    - an edge list (count, E, 2) of integers, the (tail, head) of each arc i -> j (an arc given
      k times has weight k; an entry with a negative end is padding, so graphs with fewer arcs
      share one E): returned as int64.

    ``name`` ("adjacency", "adjacency[1] (of x2)") starts every error message. Inside a torch.func
    transform (`torchntk._inputs.is_traced`) only the shapes are checked."""
    a = as_side_tensor(a, name, "dense (N, V, V) (A[n, i, j] the weight of the arc i -> j) or an integer edge "
                                "list (N, E, 2)")
    if a.is_complex():
        raise TypeError(f"{name} must hold real weights, got dtype {a.dtype}.")
    edges = not (a.is_floating_point() or a.dtype == torch.bool)
    if edges:
        if a.dim() != 3 or a.shape[2] != 2:
            raise ValueError(f"{name} is an integer tensor, so it is read as an edge list (N, E, 2) of (tail, head) "
                             f"pairs, but its shape is {tuple(a.shape)}; a dense adjacency (N, V, V) must be "
                             "floating or bool (A.to(torch.float64)).")
    elif a.dim() != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(f"{name} must have shape (N, V, V), one square matrix per graph, or be an integer edge "
                         f"list (N, E, 2), got {tuple(a.shape)}.")
    if a.shape[0] != count:
        raise ValueError(f"{name} holds {a.shape[0]} graphs but its inputs hold {count}; give one adjacency "
                         "per input, in the inputs' order.")
    # Under torch.func transforms (the empirical NTK's vmap over examples) the values cannot be
    # read, only the shapes: those are checked (the values are wherever the forward runs untransformed).
    values = not is_traced(a)
    if edges:
        out = a.to(device=device, dtype=torch.int64, copy=True)
        if values and out.numel() and out.max() >= nodes:
            raise ValueError(f"{name} has an arc to or from node {int(out.max())}, but the inputs (N, C, V) have "
                             f"V = {nodes} nodes, numbered 0 to {nodes - 1} (negative entries mark padding).")
        return out
    if a.shape[1] != nodes:
        raise ValueError(f"{name} is over {a.shape[1]} nodes but the inputs (N, C, V) have V = {nodes}.")
    out = a.to(device=device, dtype=dtype, copy=True)
    if values and not torch.isfinite(out).all():
        raise ValueError(f"{name} holds a NaN or an infinite weight; every arc weight must be finite.")
    return out

def aggregate(t: Tensor, a: Tensor, *, batch_axis: int, axis: int) -> Tensor:
    r"""``t`` with node axis ``axis`` mapped by each graph's adjacency: :math:`t'[\dots, j, \dots] =
    \sum_i A_n[i, j]\, t[\dots, i, \dots]`, graph n the index along ``batch_axis`` (``t``'s size
    there is ``a``'s N).

    ``a`` is dense (N, V, V), a floating tensor of ``t``'s dtype (a batched matrix product,
    O(V^2) per node slice), or an edge list (N, E, 2), int64 (tail, head) pairs with -1 for
    padding (a gather and a scatter-add, O(V + E) per node slice); both give the same sums.
    The finite layer is the case t = x (N, C, V), batch_axis 0, axis 2.
    """
    if a.is_floating_point():
        # t's axes as letters, the batch axis shared with a, the node axis contracted
        letters = "abcdefgh"[:t.dim()]
        before, after = letters, letters[:axis] + "z" + letters[axis + 1:]
        return torch.einsum(f"{letters[batch_axis]}{letters[axis]}z,{before}->{after}", a, t)
    valid = (a >= 0).all(dim=-1)                       # (N, E): an arc with a negative end is padding
    tails, heads = a[..., 0].clamp(min=0), a[..., 1].clamp(min=0)
    shape = [1] * t.dim()
    shape[batch_axis], shape[axis] = a.shape[0], a.shape[1]
    sizes = list(t.shape)
    sizes[axis] = a.shape[1]
    messages = torch.gather(t, axis, tails.reshape(shape).expand(sizes))
    messages = messages * valid.reshape(shape).to(t.dtype)
    return torch.zeros_like(t).scatter_add(axis, heads.reshape(shape).expand(sizes), messages)
