"""An array-like view of a kernel matrix in a store: reads only the tiles a slice touches."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from .progress import RunSummary
from .store import KernelStore


def _as_index(key: Any, n: int, axis: str) -> tuple[np.ndarray, bool]:
    """(indices, drop_axis) for one axis of a key: an int, a slice or a 1-D integer array."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        k = int(key)
        if not -n <= k < n:
            raise IndexError(f"{axis} index {k} is out of range for size {n}.")
        return np.array([k % n]), True
    if isinstance(key, slice):
        return np.arange(*key.indices(n)), False
    idx = np.asarray(key)
    if idx.ndim == 1 and idx.dtype.kind in "iu":
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"{axis} indices must lie in [-{n}, {n}); got {idx.min()}..{idx.max()}.")
        return idx % n, False
    raise TypeError(f"kernel matrices are indexed by ints, slices or 1-D integer arrays per axis, e.g. "
                    f"K[0:100, 200:300]; got {key!r} for the {axis}.")


class KernelMatrix:
    """A kernel matrix stored tile by tile on disk, used like a read-only 2-D array.

    ``np.asarray(K)`` is the full (N1, N2) matrix; ``K[a:b, c:d]`` (ints, slices with steps or
    integer arrays per axis; two arrays select the block of their outer product, as with
    ``np.ix_``) reads only the tiles it touches, mirroring lower-triangle tiles of
    a symmetric matrix from the stored upper ones. Reading a tile that is not complete raises
    ValueError. ``summary`` holds the figures of the run that returned this view (None when
    opened with `open_kernel_matrix`).
    """

    def __init__(self, store: KernelStore, kind: str, summary: RunSummary | None = None) -> None:
        if kind not in store.manifest["arrays"]:
            raise ValueError(f"the store {str(store.path)!r} holds {store.manifest['arrays']}, not {kind!r}.")
        self.store = store
        self.kind = kind
        self.summary = summary

    # -- array protocol ------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        """(N1, N2), the full matrix's shape."""
        return self.store.grid.n1, self.store.grid.n2

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype the tiles are stored in (and slices are returned in)."""
        return np.dtype(self.store.manifest["dtype"])

    ndim = 2

    @property
    def path(self) -> str:
        """The store's directory."""
        return str(self.store.path)

    @property
    def tile(self) -> int:
        """The side of the stored square tiles."""
        return self.store.grid.tile

    @property
    def symmetric(self) -> bool:
        """Whether the matrix is x against itself (only tiles on and above the diagonal are stored)."""
        return self.store.grid.symmetric

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        done = len(self.store.done(refresh=False))
        total = len(self.store.grid.tiles())
        return (f"KernelMatrix({self.kind!r}, shape={self.shape}, dtype={self.dtype}, tile={self.tile}, "
                f"path={self.path!r}, tiles done {done}/{total})")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        full = self[:, :]
        return full if dtype is None else full.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            at = next(p for p, k in enumerate(key) if k is Ellipsis)
            key = key[:at] + (slice(None),) * (3 - len(key)) + key[at + 1:]
        if len(key) > 2:
            raise IndexError(f"a kernel matrix has 2 axes; got {len(key)} indices.")
        key = key + (slice(None),) * (2 - len(key))
        rows, drop_rows = _as_index(key[0], self.shape[0], "rows")
        cols, drop_cols = _as_index(key[1], self.shape[1], "columns")
        out = self._take(rows, cols)
        if drop_rows and drop_cols:
            return out[0, 0]
        if drop_rows:
            return out[0]
        if drop_cols:
            return out[:, 0]
        return out

    def _take(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """out[a, b] = K[rows[a], cols[b]], reading each touched tile once."""
        grid, tile = self.store.grid, self.tile
        out = np.empty((rows.size, cols.size), dtype=self.dtype)
        if out.size == 0:
            return out
        row_tile, col_tile = rows // tile, cols // tile
        touched_rows, touched_cols = np.unique(row_tile), np.unique(col_tile)
        self.store.require({grid.stored(int(i), int(j))[:2] for i in touched_rows for j in touched_cols})
        for i in touched_rows:
            at_rows = np.flatnonzero(row_tile == i)
            local_rows = rows[at_rows] - i * tile
            r_lo, r_hi = int(local_rows.min()), int(local_rows.max()) + 1
            for j in touched_cols:
                at_cols = np.flatnonzero(col_tile == j)
                local_cols = cols[at_cols] - j * tile
                c_lo, c_hi = int(local_cols.min()), int(local_cols.max()) + 1
                block = self.store.read_block(self.kind, int(i), int(j), slice(r_lo, r_hi), slice(c_lo, c_hi),
                                              check=False)
                out[np.ix_(at_rows, at_cols)] = block[np.ix_(local_rows - r_lo, local_cols - c_lo)]
        return out

    # -- conveniences ------------------------------------------------------------------------

    def tile_block(self, i: int, j: int) -> np.ndarray:
        """Tile (i, j) as stored (a lower tile of a symmetric matrix is its mirror's transpose)."""
        return self.store.read_block(self.kind, i, j)

    def missing_tiles(self) -> list[tuple[int, int]]:
        """The tiles still to compute (upper triangle only when symmetric)."""
        done = self.store.done()
        return [t for t in self.store.grid.tiles() if t not in done]

    @property
    def complete(self) -> bool:
        """Whether every tile of the schedule is on disk and marked complete."""
        return not self.missing_tiles()

    def to_torch(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The full matrix as a torch tensor (needs N1 * N2 numbers of memory)."""
        return torch.from_numpy(np.asarray(self)).to(dtype)


def open_kernel_matrix(path: str | os.PathLike, kind: str | None = None) -> KernelMatrix:
    """Reopen a kernel store written by `torchntk.kernel_matrix`.

    Args:
        path: the store directory.
        kind: "ntk" or "nngp"; may be omitted when the store holds one kernel only.
    """
    store = KernelStore.open(path)
    arrays = store.manifest["arrays"]
    if kind is None:
        if len(arrays) != 1:
            raise ValueError(f"the store {str(path)!r} holds {arrays}; say which with kind='ntk' or kind='nngp'.")
        kind = arrays[0]
    return KernelMatrix(store, kind)
