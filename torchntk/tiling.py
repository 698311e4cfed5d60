"""Tile-by-tile evaluation of the kernel recursion.

The recursion is elementwise after the first layer's Gram matrix, so an (N1, N2) kernel is a
grid of independent (tile, tile) blocks. Each block runs through all layers while it is small
enough to stay in cache, which is what makes the recursion cost close to its floor (one GEMM
plus one arc-cosine pass per hidden layer). Temporary memory is a few blocks, whatever N; for
x1 against itself only blocks on and above the diagonal are computed and the others mirrored,
so the result is exactly symmetric and costs about half.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from .kernel_state import KernelState, input_state

DEFAULT_TILE = 512
"""Block side: 512 x 512 float64 blocks (2 MiB each) keep a layer's working set near cache while
Python overhead per block stays small; benchmarks/bench_kernels.py --tile measures the choice."""


def _propagate(layers: Sequence, k: KernelState) -> KernelState:
    for layer in layers:
        k = layer.apply(k)
    return k


def evaluate(layers: Sequence, x1: Tensor, x2: Tensor | None, *, need_ntk: bool,
             diagonal: bool = False, tile: int = DEFAULT_TILE) -> tuple[Tensor, Tensor | None]:
    """(nngp, ntk or None) of the network described by ``layers`` on (x1, x2).

    x1 (N1, d), x2 (N2, d) or None (x1 against itself). Returns (N1, N2) matrices, or (N1,)
    vectors k(x_i, x_i) when ``diagonal``.
    """
    if diagonal:
        k = _propagate(layers, input_state(x1, None, need_ntk, diagonal=True))
        return k.nngp, k.ntk
    symmetric = x2 is None
    cols = x1 if symmetric else x2
    n1, n2 = x1.shape[0], cols.shape[0]
    nngp = torch.empty(n1, n2, dtype=x1.dtype, device=x1.device)
    ntk = torch.empty_like(nngp) if need_ntk else None
    for rows, cols_, same in tile_pairs(n1, n2, tile, symmetric):
        k = _propagate(layers, input_state(x1[rows], None if same else cols[cols_], need_ntk))
        for out, block in ((nngp, k.nngp), (ntk, k.ntk)):
            if out is not None:
                store_tile(out, rows, cols_, block, same, symmetric, Tensor.t)
    return nngp, ntk


def tile_pairs(n1: int, n2: int, tile: int, symmetric: bool) -> Iterator[tuple[slice, slice, bool]]:
    """The tiles (rows, cols, on_diagonal) of an (n1, n2) kernel; of a symmetric one (x2 None)
    only those on and above the diagonal, the rest being their mirrors."""
    for i in range(0, n1, tile):
        for j in range(i if symmetric else 0, n2, tile):
            yield slice(i, min(i + tile, n1)), slice(j, min(j + tile, n2)), symmetric and i == j


def store_tile(out: Tensor, rows: slice, cols: slice, block: Tensor, same: bool, symmetric: bool,
               mirror: Callable[[Tensor], Tensor]) -> None:
    """Write ``block`` at out[rows, cols] and, for a symmetric kernel, its mirror at out[cols, rows].

    ``mirror`` swaps a block's two points (the transpose, or per-position pairs for architecture
    layouts). A tile on the diagonal is averaged with its mirror: rounding can differ between
    (a, b) and (b, a) inside one block, and the kernel must be exactly symmetric."""
    if same:
        block = (block + mirror(block)) / 2
    out[rows, cols] = block
    if symmetric and not same:
        out[cols, rows] = mirror(block)
