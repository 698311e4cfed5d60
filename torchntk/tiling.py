"""Tile-by-tile evaluation of the kernel recursion.

The recursion is elementwise after the first layer's Gram matrix, so an (N1, N2) kernel is a
grid of independent (tile, tile) blocks. Each block runs through all layers while it is small
enough to stay in cache, which is what makes the recursion cost close to its floor (one GEMM
plus one arc-cosine pass per hidden layer). Temporary memory is a few blocks, whatever N; for
x1 against itself only blocks on and above the diagonal are computed and the others mirrored,
so the result is exactly symmetric and costs about half.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    for i in range(0, n1, tile):
        rows = slice(i, min(i + tile, n1))
        for j in range(i if symmetric else 0, n2, tile):
            cols_ = slice(j, min(j + tile, n2))
            same = symmetric and i == j
            k = _propagate(layers, input_state(x1[rows], None if same else cols[cols_], need_ntk))
            for out, block in ((nngp, k.nngp), (ntk, k.ntk)):
                if out is None:
                    continue
                if same:  # rounding can differ between (a, b) and (b, a) inside one block
                    block = (block + block.T) / 2
                out[rows, cols_] = block
                if symmetric and not same:
                    out[cols_, rows] = block.T
    return nngp, ntk
