"""The kernel state that flows through the layers of a description, tile by tile.

For a tile of input pairs it holds the layer's NNGP and NTK and, because nonlinearities and
normalisation need each Gaussian's own variance, the self-pair kernels K(x_i, x_i) of the
tile's row inputs and column inputs (the full self-covariance over positions when the layout is
full: after pooling, a variance depends on covariances between positions). On a block of x
against itself the self-pairs are read off the block's own diagonal instead, so that a point's
correlation with itself is exactly 1 at every layer. Layouts are described in layout.py.

Every tensor in a state is owned by it: layers may overwrite them in place when no derivative
is being taken. A layer that hands one state to several consumers (FanOut) gives each a copy.

Side inputs. Some layers read per-input data besides the kernels: `Aggregate` reads each graph's
adjacency. Such data travels with its inputs: ``state.side`` maps a name ("adjacency") to the
pair (rows' data, columns' data), the tile's slices of what the caller gave for x1 and x2, each
with the inputs' leading axis (n1, ...) and (n2, ...). On a block of x against itself and on
self-pairs both are the same tensor, and the self-pair states of a block (`self_states`) carry
(rows, rows) and (columns, columns), so a layer applies the same formula to every state it gets.
The tile walk (tiles.py) slices side inputs with the rows and columns of each tile; layers only
read them (they are never overwritten) and pass them on unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from . import layout


@dataclass(frozen=True)
class KernelState:
    """Kernels of one layer's outputs on a tile.

    A fully-connected network is the case d = 0: nngp is (n1, n2) and the self-pairs are the
    variances (n1,), (n2,).

    Attributes:
        nngp: (n1, n2, *S) for a block (prefix 2), or (n, *S) for self-pairs (prefix 1).
        ntk: the same shape; a 0-dim zero before any parameter (the input); None if not wanted.
        self1: the rows' self-pairs (n1, *S); None when the state is itself self-pairs (prefix 1)
            or a block of x against itself (``same``).
        self2: the columns' self-pairs (n2, *S), likewise.
        prefix: 2 for a block of pairs, 1 for self-pairs.
        same: the block pairs x with itself (its self-pairs are read off its diagonal).
        spatial: the number of spatial axes d (0: vectors, S = ()).
        full: whether S holds every pair of positions (else each position with itself).
        flat: after Flatten (positions are features).
        side: the side inputs of the tile's rows and columns by name (see the module docstring);
            empty when the description reads none.
    """

    nngp: Tensor
    ntk: Tensor | None
    self1: Tensor | None
    self2: Tensor | None
    prefix: int
    same: bool
    spatial: int
    full: bool
    flat: bool = False
    side: Mapping[str, tuple[Tensor, Tensor]] = field(default_factory=dict)

    # -- self-pairs and variances -----------------------------------------------------

    def rows_self(self) -> Tensor:
        """The row inputs' self-pair kernels K(x1_i, x1_i), (n1, *S): read off the block's diagonal
        when ``same``, the state itself when it is self-pairs (prefix 1)."""
        if self.prefix == 1:
            return self.nngp
        return layout.read_self(self.nngp) if self.same else self.self1

    def cols_self(self) -> Tensor:
        """The column inputs' self-pair kernels K(x2_j, x2_j), (n2, *S), as `rows_self` for the rows."""
        if self.prefix == 1:
            return self.nngp
        return layout.read_self(self.nngp) if self.same else self.self2

    def variance_pair(self) -> tuple[Tensor, Tensor]:
        """(rows' variances, columns' variances), shaped to broadcast against ``nngp``.

        Always fresh tensors (never views of nngp), so nngp may be overwritten while they are read.
        """
        v1 = layout.variances(self.rows_self(), self.spatial, self.full)
        v2 = v1 if (self.prefix == 1 or self.same) else layout.variances(self.cols_self(), self.spatial, self.full)
        if self.prefix == 1 or v1 is self.nngp:
            v1 = v1.clone()
        if v2 is self.nngp:
            v2 = v2.clone()
        return (layout.rows(v1, self.spatial, self.full, self.prefix),
                layout.cols(v2, self.spatial, self.full, self.prefix))

    def self_states(self) -> tuple[KernelState, KernelState] | None:
        """The rows' and columns' self-pairs as prefix-1 states (None unless they are carried)."""
        if self.prefix == 1 or self.same:
            return None
        rows = {name: (a, a) for name, (a, _) in self.side.items()}
        cols = {name: (b, b) for name, (_, b) in self.side.items()}
        return (KernelState(self.self1, None, None, None, 1, False, self.spatial, self.full, self.flat, rows),
                KernelState(self.self2, None, None, None, 1, False, self.spatial, self.full, self.flat, cols))

    def with_selves(self, nngp: Tensor, ntk: Tensor | None, selves: tuple | None, *, spatial: int | None = None,
                    full: bool | None = None, flat: bool | None = None) -> KernelState:
        """A new state with these kernels; ``selves`` the new self-pair states (or None), and
        the layout fields given (the others kept). Built directly: it runs once per layer and tile."""
        s1 = s2 = None
        if selves is not None:
            s1, s2 = selves[0].nngp, selves[1].nngp
        return KernelState(nngp, ntk, s1, s2, self.prefix, self.same, self.spatial if spatial is None else spatial,
                           self.full if full is None else full, self.flat if flat is None else flat, self.side)

    def copy(self) -> KernelState:
        """A state with clones of every tensor, for a consumer that may overwrite them in place."""
        def c(t):
            return None if t is None else t.clone()
        return replace(self, nngp=c(self.nngp), ntk=c(self.ntk), self1=c(self.self1), self2=c(self.self2))

    def to_diagonal(self) -> KernelState:
        """The same kernels in the diagonal layout (positions paired with themselves)."""
        if not self.full:
            return self

        def d(t, prefix):
            return None if t is None or t.dim() == 0 else layout.to_diagonal(t, self.spatial, prefix)
        ntk = self.ntk if self.ntk is None or self.ntk.dim() == 0 else d(self.ntk, self.prefix)
        return replace(self, nngp=d(self.nngp, self.prefix), ntk=ntk, self1=d(self.self1, 1),
                       self2=d(self.self2, 1), full=False)

    def to_full_uncorrelated(self) -> KernelState:
        """The same kernels in the full layout, from the diagonal one, with zero covariance
        between different positions (the output of a layer whose positions have independent
        weights, ConvLocal)."""
        if self.full or self.spatial == 0:
            return self

        def f(t, prefix):
            return None if t is None or t.dim() == 0 else layout.diagonal_to_full(t, self.spatial, prefix)
        return replace(self, nngp=f(self.nngp, self.prefix), ntk=f(self.ntk, self.prefix) if self.ntk is not None
                       and self.ntk.dim() > 0 else self.ntk, self1=f(self.self1, 1), self2=f(self.self2, 1),
                       full=True)


def _gram(a: Tensor, b: Tensor, full: bool, diagonal: bool) -> Tensor:
    """(1/C) sum_c a_c(p) b_c(q) for inputs (n, C, *positions).

    Block (n1, n2, *S) or, with ``diagonal``, self-pairs a against itself (n, *S); S is
    positions (diagonal layout) or pairs of positions per axis (full layout).
    """
    n1, channels, *positions = a.shape
    d = len(positions)
    if diagonal:
        if not full:
            return (a * a).sum(dim=1) / channels
        # (n, C, P) x (n, C, P) -> (n, P, P), then the axes interleaved per spatial dim
        flat = a.reshape(n1, channels, -1)
        g = torch.bmm(flat.transpose(1, 2), flat) / channels
        g = g.reshape(n1, *positions, *positions)
        order = [0] + [i for axis in range(d) for i in (1 + axis, 1 + d + axis)]
        return g.permute(order).contiguous()
    n2 = b.shape[0]
    if not full:
        # per position: (P, n1, C) @ (P, C, n2)
        pa = a.reshape(n1, channels, -1).permute(2, 0, 1)
        pb = b.reshape(n2, channels, -1).permute(2, 1, 0)
        g = torch.bmm(pa, pb) / channels
        return g.permute(1, 2, 0).reshape(n1, n2, *positions).contiguous()
    ga = a.reshape(n1, channels, -1).transpose(1, 2).reshape(-1, channels)
    gb = b.reshape(n2, channels, -1).transpose(1, 2).reshape(-1, channels)
    g = (ga @ gb.T / channels).reshape(n1, *positions, n2, *positions)
    order = [0, 1 + d] + [i for axis in range(d) for i in (1 + axis, 2 + d + axis)]
    return g.permute(order).contiguous()


def input_state(x1: Tensor, x2: Tensor | None, *, need_ntk: bool, full: bool, diagonal: bool = False) -> KernelState:
    """The state of the network input on a tile: nngp = (1/C) x1 . x2 per pair of positions.

    x1 (n1, C, *positions) or (n1, d) for vectors (one position with d channels); x2 likewise,
    or None for x1 against itself
    (then the self-pairs on the block's diagonal are set to exactly the rows' own Gram, so that
    correlations there are exactly 1). ``diagonal``: self-pairs only (prefix 1). ``full`` asks
    for covariances between positions (ignored for vectors).
    """
    ntk = torch.zeros((), dtype=x1.dtype, device=x1.device) if need_ntk else None
    if x1.dim() == 2:     # vectors: a fully-connected input, no positions
        return _vector_input(x1, x2, ntk, diagonal)
    spatial = x1.dim() - 2
    s1 = _gram(x1, x1, full, diagonal=True)
    if diagonal:
        return KernelState(s1, ntk, None, None, 1, False, spatial, full)
    if x2 is None:
        block = _gram(x1, x1, full, diagonal=False)
        torch.diagonal(block, dim1=0, dim2=1).copy_(s1.movedim(0, -1))
        return KernelState(block, ntk, None, None, 2, True, spatial, full)
    return KernelState(_gram(x1, x2, full, diagonal=False), ntk, s1, _gram(x2, x2, full, diagonal=True), 2, False,
                       spatial, full)


def _vector_input(x1: Tensor, x2: Tensor | None, ntk: Tensor | None, diagonal: bool) -> KernelState:
    """`input_state` of (n, d) inputs: nngp = x1 . x2 / d, one GEMM (self-pairs: row norms / d)."""
    d = x1.shape[1]
    s1 = (x1 * x1).sum(dim=1) / d
    if diagonal:
        return KernelState(s1, ntk, None, None, 1, False, 0, False)
    if x2 is None:
        block = (x1 @ x1.T) / d
        block.diagonal().copy_(s1)
        return KernelState(block, ntk, None, None, 2, True, 0, False)
    return KernelState((x1 @ x2.T) / d, ntk, s1, (x2 * x2).sum(dim=1) / d, 2, False, 0, False)
