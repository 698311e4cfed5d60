r"""Graph networks: `Aggregate`, one step of message passing over each input's own graph.

A graph input is (N, C, V): C channels on each of V nodes (one spatial axis, the nodes, in
PyTorch's channels-first layout). Its adjacency is a side input, (N, V, V), with ``A[n, i, j]``
the weight of the arc i -> j in graph n (any real weights; zero for no arc). `Aggregate` replaces
each node's features by the weighted sum over its predecessors,

.. math::

    \operatorname{out}_n[:, j] = \sum_i x_n[:, i]\, A_n[i, j], \qquad \text{i.e. } x_n A_n,

a linear map without parameters (neural-tangents' ``stax.Aggregate()`` with its dense pattern).
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

import numpy as np
import torch
from torch import Tensor, nn

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
    ``spec.kernels(x1, adjacency=A1)``, ``net(x, adjacency=A)``. The identity adjacency leaves
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
        shape = side_shape(ADJACENCY)
        if shape is not None and tuple(shape) != (sig.shape[0],) * 2:
            raise fail(where, f"the adjacency has shape (N, {', '.join(map(str, shape))}), but this layer's input "
                              f"has {sig.shape[0]} nodes; the adjacency of graphs with V nodes is (N, V, V) (a "
                              "strided Conv or a pooling before Aggregate changes V).")
        return sig.after_linear()

    def need(self, full_out):
        return True

    def kernel(self, state: KernelState, full_out) -> KernelState:
        if ADJACENCY not in state.side:
            raise ValueError(f"{self!r} needs the graphs' adjacency: pass adjacency= with the inputs "
                             "(spec.kernels(x1, x2, adjacency=(A1, A2))).")
        rows, cols = state.side[ADJACENCY]
        nodes = state.nngp.shape[state.prefix]
        if rows.shape[-1] != nodes:
            raise ValueError(f"{self!r}: the adjacency is over {rows.shape[-1]} nodes but the input has {nodes}.")

        def pairs(t: Tensor | None) -> Tensor | None:
            if t is None or t.dim() == 0:   # the input's NTK is a 0-dim zero, and stays zero
                return t
            if state.prefix == 1:
                return torch.einsum("aij,aik,akl->ajl", rows, t, rows)
            return torch.einsum("aij,abik,bkl->abjl", rows, t, cols)

        def selves(t: Tensor | None, a: Tensor) -> Tensor | None:
            return None if t is None else torch.einsum("aij,aik,akl->ajl", a, t, a)

        out = replace(state, nngp=pairs(state.nngp), ntk=pairs(state.ntk), self1=selves(state.self1, rows),
                      self2=selves(state.self2, cols))
        return out if full_out else out.to_diagonal()

    def build(self, sig: Signal, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        return modules.Aggregate(), channels


def as_adjacency(a: Any, name: str, count: int, nodes: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``a`` as a checked (count, nodes, nodes) tensor of ``dtype`` on ``device`` (a new tensor,
    never the caller's own): a torch tensor or numpy array, real or bool (True: an arc of weight
    1), finite. ``name`` ("adjacency", "adjacency[1]") starts every error message."""
    if isinstance(a, np.ndarray):
        if a.dtype == object:
            raise TypeError(f"{name} must be a numeric array (N, V, V), got an object array.")
        a = torch.from_numpy(np.array(a))
    if not isinstance(a, Tensor):
        raise TypeError(f"{name} must be a torch tensor or numpy array of shape (N, V, V) (A[n, i, j] the weight of "
                        f"the arc i -> j), got {type(a).__name__}.")
    if a.is_complex() or not (a.is_floating_point() or a.dtype == torch.bool):
        raise TypeError(f"{name} must hold real weights (a floating or bool tensor (N, V, V)), got dtype {a.dtype}; "
                        "convert a 0/1 integer matrix with A.to(torch.float64).")
    if a.dim() != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(f"{name} must have shape (N, V, V), one square matrix per graph, got {tuple(a.shape)}.")
    if a.shape[0] != count:
        raise ValueError(f"{name} holds {a.shape[0]} graphs but its inputs hold {count}; give one adjacency "
                         "(V, V) per input, in the inputs' order.")
    if a.shape[1] != nodes:
        raise ValueError(f"{name} is over {a.shape[1]} nodes but the inputs (N, C, V) have V = {nodes}.")
    out = a.to(device=device, dtype=dtype, copy=True)
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} holds a NaN or an infinite weight; every arc weight must be finite.")
    return out
