"""The tile walk: a description's kernels on (N1, N2) inputs, one block of pairs at a time.

The recursion is independent across pairs of inputs, so an (N1, N2) kernel is a grid of blocks,
each run through all layers while it is small enough to stay near cache: for fully-connected
networks that keeps the cost close to its floor (one GEMM plus one arc-cosine pass per hidden
layer). A pair carries a spatial kernel when the inputs have positions, K(x, x')(p, q) for all
pairs of positions (full layout) or K(x, x')(p, p) (diagonal layout), so the block side shrinks
with the per-pair size to keep a block's working set near `TILE_BYTES`. For x1 against itself
only blocks on and above the diagonal are computed and mirrored, so the result is exactly
symmetric and costs about half.

Side inputs (`KernelState.side`: per-input data a layer reads besides the kernels, such as
`Aggregate`'s adjacency) are given to `evaluate` as name -> (data of x1, data of x2 or None),
each with the inputs' leading axis; every tile gets the slices of its rows and its columns, so
they travel with their inputs whatever the tiling (the diagonal path gets its rows' twice).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace

import torch
from torch import Tensor

from . import layout
from .heap import warm_heap
from .state import KernelState, input_state

DEFAULT_TILE = 512
"""Largest block side: 512 x 512 float64 blocks (2 MiB each) keep a layer's working set near
cache while Python overhead per block stays small; benchmarks/bench_kernels.py --tile measures
the choice."""

TILE_BYTES = 2 * 2**20
"""Target size of one kernel tensor of a block: a layer holds a few of them at once."""


def pair_elements(shape: Sequence[int], full: bool) -> int:
    """Entries per input pair of a kernel over positions ``shape``."""
    size = math.prod(shape) if shape else 1
    return size * size if full else size


def default_tile(shape: Sequence[int], full: bool, itemsize: int) -> int:
    """The block side b (1 <= b <= `DEFAULT_TILE`) for which one (b, b, *S) kernel tensor of
    inputs over positions ``shape`` (full or diagonal layout, ``itemsize`` bytes an entry) is
    about `TILE_BYTES`."""
    per_pair = pair_elements(shape, full) * itemsize
    return max(1, min(DEFAULT_TILE, int(math.sqrt(TILE_BYTES / per_pair))))


LIVE_TENSORS = 8
"""Kernel tensors of a tile alive at once inside a layer (NNGP, NTK, self-pairs, temporaries),
per branch: the factor of `memory_estimate`."""


def device_memory(device: torch.device) -> int:
    """The memory a computation on ``device`` may count on, in bytes: an accelerator's free
    memory; on the CPU the kernel's estimate of available memory (MemAvailable), or the
    physical memory where that cannot be read."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_estimate(n1: int, n2: int | None, positions: Sequence[int], out_shape: Sequence[int], *, full_in: bool,
                    itemsize: int, tile: int, kernels: int, out_features: int | None, branches: int) -> dict[str, int]:
    """Bytes that a kernel call needs: ``outputs`` (``kernels`` results of (N1, N2, *out_shape),
    (N1, *out_shape) on the diagonal path (n2 None), or their (.., k, k) form with
    ``out_features``) and ``tiles`` (`LIVE_TENSORS` kernel tensors of one tile per branch alive
    at once; in the full layout a pair of inputs carries every pair of positions)."""
    pairs = min(tile * tile, n1) if n2 is None else min(tile, n1) * min(tile, n2)
    out = n1 * (1 if n2 is None else n2) * math.prod(out_shape) * itemsize * kernels * (out_features or 1) ** 2
    work = LIVE_TENSORS * branches * pairs * pair_elements(positions, full_in) * itemsize
    return {"outputs": out, "tiles": work}


def check_memory(estimate: dict[str, int], device: torch.device) -> None:
    """Raise ValueError, before any work, when a `memory_estimate` exceeds the device's memory,
    saying which part and what would fit."""
    have = device_memory(device)
    if estimate["outputs"] > have:
        raise ValueError(f"the kernels asked for take {_gib(estimate['outputs'])} as results alone, more than the "
                         f"{_gib(have)} of {device}; ask for fewer inputs (or x2 blocks), no out_features (the "
                         "(N1, N2, k, k) form is K (x) Id_k, k^2 times the scalar kernel), or store them in tiles on "
                         "disk (torchntk.kernel_matrix).")
    if estimate["tiles"] > have:
        raise ValueError(f"one pair of inputs needs a kernel over every pair of positions here (pooling below the "
                         f"readout needs the full covariance), {_gib(estimate['tiles'])} per tile at the smallest, "
                         f"more than the {_gib(have)} of {device}; use smaller inputs (an AvgPool or a strided Conv "
                         "first), or a Flatten readout, which needs each position with itself only.")


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def evaluate(network: Callable[[KernelState], KernelState], x1: Tensor, x2: Tensor | None, *, need_ntk: bool,
             full_in: bool, out_shape: tuple[int, ...], diagonal: bool = False, tile: int | None = None,
             side: Mapping[str, tuple[Tensor, Tensor | None]] | None = None) -> tuple[Tensor, Tensor | None]:
    """(nngp, ntk or None) of a compiled description (`Layer.compile`, output in the diagonal
    layout) on inputs (N, C, *positions) or (N, d).

    ``full_in``: whether the input state must carry covariances between positions (decided by
    the layers' `need`); ``out_shape``: the output's positions (() after a readout), for which
    the result holds each position with itself. Returns (N1, N2, *out_shape) tensors, or
    (N1, *out_shape) with ``diagonal``. ``side``: the side inputs, name -> (data of x1, data of
    x2 or None for x1 against itself), sliced with each tile's rows and columns (module docstring).
    """
    side = dict(side or {})
    warm_heap(x1.device)

    def sided(state: KernelState, rows: slice, cols: slice | None) -> KernelState:
        if not side:
            return state
        pairs = {}
        for name, (first, second) in side.items():
            mine = first[rows]
            theirs = mine if cols is None else (first if second is None else second)[cols]
            pairs[name] = (mine, theirs)
        return replace(state, side=pairs)

    positions = tuple(x1.shape[2:])
    if tile is None:
        tile = default_tile(positions, full_in, x1.element_size())
    n1 = x1.shape[0]
    if diagonal:
        rows_at_once = max(1, tile * tile)
        blocks = [slice(i, i + rows_at_once) for i in range(0, n1, rows_at_once)]
        parts = [_run(network, sided(input_state(x1[b], None, need_ntk=need_ntk, full=full_in, diagonal=True), b,
                                     None), need_ntk) for b in blocks]
        if len(parts) == 1:
            return parts[0]
        nngp = torch.cat([p[0] for p in parts])
        return nngp, (torch.cat([p[1] for p in parts]) if need_ntk else None)
    symmetric = x2 is None
    cols = x1 if symmetric else x2
    n2 = cols.shape[0]
    nngp = torch.empty(n1, n2, *out_shape, dtype=x1.dtype, device=x1.device)
    ntk = torch.empty_like(nngp) if need_ntk else None
    spatial = len(out_shape)

    def mirror(block: Tensor) -> Tensor:
        return layout.swap_pairs(block, spatial, False)

    for rows, cols_, same in tile_pairs(n1, n2, tile, symmetric):
        state = input_state(x1[rows], None if same else cols[cols_], need_ntk=need_ntk, full=full_in)
        state = sided(state, rows, None if same else cols_)
        for out, block in zip((nngp, ntk), _run(network, state, need_ntk), strict=True):
            if out is not None:
                store_tile(out, rows, cols_, block, same, symmetric, mirror)
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

    ``mirror`` swaps a block's two points (`layout.swap_pairs`). A tile on the diagonal is
    averaged with its mirror: rounding can differ between (a, b) and (b, a) inside one block,
    and the kernel must be exactly symmetric."""
    if same:
        block = (block + mirror(block)) / 2
    out[rows, cols] = block
    if symmetric and not same:
        out[cols, rows] = mirror(block)


def _run(network, state, need_ntk):
    out = network(state)
    ntk = out.ntk if need_ntk else None
    if ntk is not None and ntk.dim() == 0:   # no weighted layer: the NTK is zero
        ntk = torch.zeros_like(out.nngp)
    return out.nngp, ntk
