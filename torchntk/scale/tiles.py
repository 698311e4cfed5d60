"""Tile scheduling: which (tile, tile) blocks make up an N1 x N2 kernel, and computing one.

Tile (i, j) covers rows [i * tile, min((i + 1) * tile, N1)) and the same for columns. For x1
against itself (x2 None) the matrix is symmetric and only tiles with i <= j are computed; tile
(j, i) is the transpose of tile (i, j). Each tile is computed from its row and column blocks
alone, so tiles are independent jobs in any order and on any machine.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import _side
from .._inputs import as_side_tensor

INNER_TILE = 1024
"""Block side used inside one stored tile (the block of torchntk.engine.tiles). With one thread per
tile (see `tile_workers`), 1024 measured fastest of 256..2048 for a float32 depth-4 ReLU NTK
(benchmarks/bench_scale.py): fewer, larger elementwise passes than 256."""


_threads_lock = threading.Lock()
_single_threaded_users = 0
_threads_before = 0


def tile_workers(device: torch.device) -> int:
    """How many tiles to compute at once: one per torch thread on the CPU (each tile's
    operations then run single-threaded, see `single_threaded_ops`), one on an accelerator."""
    if device.type != "cpu":
        return 1
    with _threads_lock:
        threads = _threads_before if _single_threaded_users else torch.get_num_threads()
    return max(1, threads)


@contextlib.contextmanager
def single_threaded_ops(enabled: bool = True) -> Iterator[None]:
    """Run torch CPU operations on one thread while tiles are computed in parallel threads.

    Parallelism across independent tiles needs no synchronisation, whereas intra-op threads
    meet at a barrier after every elementwise pass; on a busy machine those barriers cost up to
    5x (measured on 2 shared cores). torch's thread count is process-wide: the first of nested
    or concurrent users sets it to 1 and the last one restores it.
    """
    global _single_threaded_users, _threads_before
    if not enabled:
        yield
        return
    with _threads_lock:
        if _single_threaded_users == 0:
            _threads_before = torch.get_num_threads()
            torch.set_num_threads(1)
        _single_threaded_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _single_threaded_users -= 1
            if _single_threaded_users == 0:
                torch.set_num_threads(_threads_before)


@dataclass(frozen=True)
class TileGrid:
    """The tiles of an (n1, n2) matrix with square tiles of side ``tile``."""

    n1: int
    n2: int
    tile: int
    symmetric: bool

    @property
    def rows(self) -> int:
        """The number of tile rows, ceil(n1 / tile)."""
        return -(-self.n1 // self.tile)

    @property
    def cols(self) -> int:
        """The number of tile columns, ceil(n2 / tile)."""
        return -(-self.n2 // self.tile)

    def row_range(self, i: int) -> tuple[int, int]:
        """(start, stop) of the matrix rows of tile row i (the last one may be short)."""
        return i * self.tile, min((i + 1) * self.tile, self.n1)

    def col_range(self, j: int) -> tuple[int, int]:
        """(start, stop) of the matrix columns of tile column j (the last one may be short)."""
        return j * self.tile, min((j + 1) * self.tile, self.n2)

    def tiles(self) -> list[tuple[int, int]]:
        """Every tile to compute, row by row (upper triangle only when symmetric)."""
        return [(i, j) for i in range(self.rows) for j in range(i if self.symmetric else 0, self.cols)]

    def entries(self, i: int, j: int) -> int:
        """The number of matrix entries in tile (i, j)."""
        (r0, r1), (c0, c1) = self.row_range(i), self.col_range(j)
        return (r1 - r0) * (c1 - c0)

    def stored(self, i: int, j: int) -> tuple[int, int, bool]:
        """(i', j', transposed): where tile (i, j) is stored; lower tiles of a symmetric matrix
        are the transposes of upper ones."""
        if self.symmetric and i > j:
            return j, i, True
        return i, j, False


def compute_tile(spec: Any, x1: Tensor, x2: Tensor | None, arrays: tuple[str, ...], grid: TileGrid,
                 i: int, j: int, side1: dict[str, Any] | None = None,
                 side2: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The tile (i, j) of each kernel in ``arrays`` ("nngp", "ntk"), as numpy arrays on the CPU.

    A diagonal tile of a symmetric matrix is computed as its row block against itself, so it is
    exactly symmetric with exact variances on its diagonal, as in ``spec.kernels(x)``. ``side1``
    and ``side2``: the side inputs of x1 and x2 by name (`torchntk._side`); the tile takes the
    rows of each that its rows and columns are.
    """
    r0, r1 = grid.row_range(i)
    c0, c1 = grid.col_range(j)
    rows = x1[r0:r1]
    side1 = side1 or {}
    if grid.symmetric:
        cols = None if i == j else x1[c0:c1]
        col_side = None if i == j else _side.rows(side1, slice(c0, c1))
    else:
        cols = x2[c0:c1]
        col_side = _side.rows(side2 or {}, slice(c0, c1))
    options = {"dtype": x1.dtype, "tile": INNER_TILE,
               **_side.keywords(_side.rows(side1, slice(r0, r1)), col_side, rows, cols)}
    with torch.no_grad():
        if arrays == ("ntk",):
            blocks = {"ntk": spec.ntk(rows, cols, **options)}
        elif arrays == ("nngp",):
            blocks = {"nngp": spec.nngp(rows, cols, **options)}
        else:
            nngp, ntk = spec.kernels(rows, cols, **options)
            blocks = {"nngp": nngp, "ntk": ntk}
    return {name: block.cpu().numpy() for name, block in blocks.items()}


def side_inputs_of(spec: Any, side_inputs: dict[str, Any] | None, x1: Tensor,
                  x2: Tensor | None) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """(x1's side inputs, x2's or None) by name from ``spec.kernels``-style keywords (one value
    each for x2 None, else a pair), each checked whole by the kernels' own check (`_side`): a
    ValueError before any store is touched for a missing required one, one no layer reads, or a
    wrong shape. The values are kept as given (tensors or copies of numpy arrays)."""
    side = _side.given(side_inputs)
    missing, unread = _side.problems(spec, side)
    if missing:
        raise ValueError(f"the description reads {missing[0]} (a layer such as Aggregate), but side_inputs has none: "
                         f"pass side_inputs={{{missing[0]!r}: ...}}, {_side.BY_NAME[missing[0]].holds}.")
    if unread:
        raise ValueError(f"side_inputs has {unread[0]!r}, but no layer of the description reads it; leave it out.")
    side1: dict[str, Tensor] = {}
    side2: dict[str, Tensor] | None = None if x2 is None else {}
    shape = tuple(x1.shape[1:])
    for name, value in side.items():
        entry = _side.BY_NAME[name]
        if x2 is None:
            if isinstance(value, tuple):
                raise ValueError(f"x2 is None, so side_inputs[{name!r}] is one value for x, not a tuple.")
            values = ((value, side1, x1, f"side_inputs[{name!r}]"),)
        else:
            if not isinstance(value, tuple) or len(value) != 2:
                raise ValueError(f"with x and x2, side_inputs[{name!r}] is a pair (for x, for x2), as spec.kernels "
                                 "takes it.")
            values = ((value[0], side1, x1, f"side_inputs[{name!r}][0] (of x)"),
                      (value[1], side2, x2, f"side_inputs[{name!r}][1] (of x2)"))
        for v, out, x, label in values:
            entry.check(v, label, x.shape[0], shape)
            out[name] = as_side_tensor(v, label, entry.holds)
    return side1, side2
