"""Tile-by-tile evaluation of an architecture's kernels.

As for fully-connected networks the recursion is independent across pairs of inputs, so an
(N1, N2) kernel is a grid of blocks; here a pair carries a spatial kernel, K(x, x')(p, q) for
all pairs of positions (full layout) or K(x, x')(p, p) (diagonal layout), so the block side
shrinks with the per-pair size to keep a block's working set near `TILE_BYTES`. For x1 against
itself only blocks on and above the diagonal are computed and mirrored (exact symmetry).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..tiling import store_tile, tile_pairs
from . import layout
from .branches import run_serial
from .state import input_state

TILE_BYTES = 2 * 2**20
"""Target size of one kernel tensor of a block: a layer holds a few of them at once."""


def pair_elements(shape: Sequence[int], full: bool) -> int:
    """Entries per input pair of a kernel over positions ``shape``."""
    size = math.prod(shape) if shape else 1
    return size * size if full else size


def default_tile(shape: Sequence[int], full: bool, itemsize: int) -> int:
    """The block side b (1 <= b <= 512) for which one (b, b, *S) kernel tensor of inputs over
    positions ``shape`` (full or diagonal layout, ``itemsize`` bytes an entry) is about `TILE_BYTES`."""
    per_pair = pair_elements(shape, full) * itemsize
    return max(1, min(512, int(math.sqrt(TILE_BYTES / per_pair))))


def evaluate(layers: Sequence, x1: Tensor, x2: Tensor | None, *, need_ntk: bool, full_in: bool,
             out_shape: tuple[int, ...], diagonal: bool = False, tile: int | None = None,
             ) -> tuple[Tensor, Tensor | None]:
    """(nngp, ntk or None) of the architecture ``layers`` on inputs (N, C, *positions) or (N, d).

    ``full_in``: whether the input state must carry covariances between positions (decided by
    the layers, see Serial); ``out_shape``: the output's positions (() after a readout), for
    which the result holds each position with itself. Returns (N1, N2, *out_shape) tensors, or
    (N1, *out_shape) with ``diagonal``.
    """
    positions = tuple(x1.shape[2:])
    if tile is None:
        tile = default_tile(positions, full_in, x1.element_size())
    n1 = x1.shape[0]
    if diagonal:
        rows_at_once = max(1, tile * tile)
        parts = [_run(layers, input_state(x1[i:i + rows_at_once], None, need_ntk=need_ntk, full=full_in,
                                          diagonal=True), need_ntk) for i in range(0, n1, rows_at_once)]
        nngp = torch.cat([p[0] for p in parts])
        return nngp, (torch.cat([p[1] for p in parts]) if need_ntk else None)
    symmetric = x2 is None
    cols = x1 if symmetric else x2
    n2 = cols.shape[0]
    nngp = torch.empty(n1, n2, *out_shape, dtype=x1.dtype, device=x1.device)
    ntk = torch.empty_like(nngp) if need_ntk else None
    def mirror(block: Tensor) -> Tensor:
        return layout.swap_pairs(block, len(out_shape), False)

    for rows, cols_, same in tile_pairs(n1, n2, tile, symmetric):
        state = input_state(x1[rows], None if same else cols[cols_], need_ntk=need_ntk, full=full_in)
        for out, block in zip((nngp, ntk), _run(layers, state, need_ntk), strict=True):
            if out is not None:
                store_tile(out, rows, cols_, block, same, symmetric, mirror)
    return nngp, ntk


def _run(layers, state, need_ntk):
    out = run_serial(layers, state, False)
    ntk = out.ntk if need_ntk else None
    if ntk is not None and ntk.dim() == 0:   # no weighted layer: the NTK is zero
        ntk = torch.zeros_like(out.nngp)
    return out.nngp, ntk
