"""Kernel matrices as linear operators v -> K v that never hold K: tiles are streamed from a
store or recomputed from the network description, one at a time.

For a symmetric K only the tiles on and above the diagonal exist; tile (i, j) with i < j
contributes K_ij v_j to rows i and K_ij^T v_i to rows j, so each tile is read once per product.
Products run tile row by tile row; with a Dask client each tile row is a task and the driver
sums their partial results.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._inputs import as_batch, check_pairwise_output
from .manifest import KINDS
from .matrix import KernelMatrix
from .store import KernelStore
from .tiles import TileGrid, compute_tile, side_inputs_of, single_threaded_ops, tile_workers


@dataclass
class StoreTiles:
    """Tiles read from a kernel store (small and serialisable: a path and the manifest)."""

    path: str
    manifest: dict
    kind: str

    @property
    def grid(self) -> TileGrid:
        """The store's tile grid (from its manifest)."""
        return KernelStore(self.path, self.manifest).grid

    def opener(self) -> KernelStore:
        """A fresh handle on the store, to read tiles from (one per worker)."""
        return KernelStore(self.path, self.manifest)


@dataclass
class SpecTiles:
    """Tiles recomputed from a network description and the inputs (and their side inputs by
    name, each tile taking its rows of them), on every product."""

    spec: Any
    x: Tensor
    kind: str
    tile: int
    side: dict = field(default_factory=dict)

    @property
    def grid(self) -> TileGrid:
        """The symmetric (N, N) grid of x against itself with tiles of side ``tile``."""
        return TileGrid(self.x.shape[0], self.x.shape[0], self.tile, True)


ROW_CHUNK = 64
"""Rows of a float32 tile widened to float64 at a time in products: a (64, 4096) float64 slab
is 2 MiB, so both products with it run while it sits in cache (measured on 4096-tiles, one
thread: 64 rows 11 ms per tile at k = 1 and 57 ms at k = 10, against 15 and 157 ms for 32 rows
with the transposed product accumulated as (tile, k) rank updates)."""


def _tiles_ahead(source: StoreTiles | SpecTiles, pairs: list[tuple[int, int]]) -> Iterator[Tensor]:
    """The stored tiles ``pairs`` in order, as tensors. Store tiles are memory-mapped and the
    next one is announced to the OS (read-ahead) while the caller works on the current one;
    other sources are read or computed one tile ahead in a thread."""
    if isinstance(source, StoreTiles):
        store = source.opener()
        if store.raw_chunks(source.kind):
            ahead = store.map_stored_tile(source.kind, *pairs[0]) if pairs else None
            for index in range(len(pairs)):
                block = ahead
                ahead = store.map_stored_tile(source.kind, *pairs[index + 1]) if index + 1 < len(pairs) else None
                yield torch.from_numpy(block)
            return

        def read(i: int, j: int) -> np.ndarray:
            return store.read_block(source.kind, i, j, check=False)
    else:
        def read(i: int, j: int) -> np.ndarray:
            return compute_tile(source.spec, source.x, None, (source.kind,), source.grid, i, j,
                                source.side)[source.kind]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="torchntk-tile-reader") as reader:
        ahead = reader.submit(read, *pairs[0]) if pairs else None
        for index in range(len(pairs)):
            block = ahead.result()
            ahead = reader.submit(read, *pairs[index + 1]) if index + 1 < len(pairs) else None
            yield torch.from_numpy(block)


def row_product(source: StoreTiles | SpecTiles, i: int, v: Tensor, dtype: torch.dtype) -> Tensor:
    """The contribution of tile row i (tiles (i, j), j >= i) to K v, as rows [i * tile, N) of the
    result; the arithmetic is done in ``dtype`` (tiles are widened slab by slab).

    A slab S of rows [r, r + R) of tile (i, j) adds S v[cols j] to rows r.. and, above the
    diagonal, S^T v[rows r..] to the rows of tile column j. The second is accumulated transposed,
    as v[rows r..]^T S into a (k, N) buffer: a (k, R) x (R, tile) product writes k contiguous rows,
    where the (tile, R) x (R, k) form is a rank-R update of a (tile, k) block (1.8x slower at k = 10)."""
    grid = source.grid
    start, r1 = grid.row_range(i)
    out = torch.zeros(grid.n1 - start, v.shape[1], dtype=dtype)
    out_t = torch.zeros(v.shape[1], grid.n1 - start, dtype=dtype)
    v = v.to(dtype)
    v_rows_t = v[start:r1].T.contiguous()
    slab = torch.empty(ROW_CHUNK, grid.tile, dtype=dtype)
    pairs = [(i, j) for j in range(i, grid.cols)]
    for (_, j), tile in zip(pairs, _tiles_ahead(source, pairs), strict=True):
        c0, c1 = grid.col_range(j)
        cols_t = out_t[:, c0 - start:c1 - start]
        for r in range(0, tile.shape[0], ROW_CHUNK):
            rows = tile[r:r + ROW_CHUNK]
            part = rows if rows.dtype == dtype else slab[:rows.shape[0], :rows.shape[1]].copy_(rows)
            out[r:r + part.shape[0]].addmm_(part, v[c0:c1])
            if j != i:
                cols_t.addmm_(v_rows_t[:, r:r + part.shape[0]], part)
    return out.add_(out_t.T)


class TiledKernel:
    """A symmetric N x N kernel matrix as a linear operator, streamed tile by tile.

    Use `StoredKernel` (tiles read from a store) or `ComputedKernel` (tiles recomputed from
    spec and x); products with a (N, k) block cost one pass over the tiles, whatever k.
    """

    def __init__(self, source: StoreTiles | SpecTiles, client: Any = None) -> None:
        self.source = source
        self.client = client
        self._scattered = None

    @property
    def shape(self) -> tuple[int, int]:
        """(N, N)."""
        grid = self.source.grid
        return grid.n1, grid.n1

    @property
    def storage_dtype(self) -> torch.dtype:
        """The precision the tiles come in; sketches may compute in it."""
        if isinstance(self.source, StoreTiles):
            return torch.float64 if self.source.manifest["dtype"] == "float64" else torch.float32
        return self.source.x.dtype

    def matmul(self, v: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """K v for v of shape (N,) or (N, k), computed in ``dtype`` (float64 by default)."""
        v = torch.as_tensor(v)
        vector = v.dim() == 1
        block = v.reshape(-1, 1) if vector else v
        if block.dim() != 2 or block.shape[0] != self.shape[0]:
            raise ValueError(f"the kernel matrix has {self.shape[0]} rows; v must have shape ({self.shape[0]},) or "
                             f"({self.shape[0]}, k), got {tuple(v.shape)}.")
        device = block.device
        block = block.detach().to("cpu", dtype)
        out = self._on_dask(block, dtype) if self.client is not None else self._here(block, dtype)
        out = out.to(device)
        return out[:, 0] if vector else out

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matmul(v)

    def _here(self, v: Tensor, dtype: torch.dtype) -> Tensor:
        """Tile rows in parallel threads, one CPU thread each (see tiles.single_threaded_ops);
        the longest rows (the first) start first."""
        grid = self.source.grid
        out = torch.zeros(grid.n1, v.shape[1], dtype=dtype)
        workers = min(tile_workers(torch.device("cpu")), grid.rows)
        with single_threaded_ops(workers > 1), \
                ThreadPoolExecutor(workers, thread_name_prefix="torchntk-row") as pool:
            parts = pool.map(lambda i: row_product(self.source, i, v, dtype), range(grid.rows))
            for i, part in enumerate(parts):
                out[grid.row_range(i)[0]:] += part
        return out

    def _on_dask(self, v: Tensor, dtype: torch.dtype) -> Tensor:
        from .distributed import as_client

        grid = self.source.grid
        out = torch.zeros(grid.n1, v.shape[1], dtype=dtype)
        with as_client(self.client) as client:
            if self._scattered is None or isinstance(self.client, str):
                self._scattered = client.scatter(self.source, broadcast=True, hash=False)
            v_remote = client.scatter(v, broadcast=True, hash=False)
            futures = [client.submit(row_product, self._scattered, i, v_remote, dtype, pure=False)
                       for i in range(grid.rows)]
            for i, part in zip(range(grid.rows), client.gather(futures), strict=False):
                out[grid.row_range(i)[0]:] += part
        return out


class StoredKernel(TiledKernel):
    """K v with K streamed from a kernel store (a `KernelMatrix` from `kernel_matrix`).

    Args:
        matrix: a complete, symmetric store (x2 None), e.g. ``kernel_matrix(spec, x, store=...)``.
        client: optional Dask client or address: tile rows become tasks on its workers (the
            store must be on a filesystem they share).
    """

    def __init__(self, matrix: KernelMatrix, client: Any = None) -> None:
        if not isinstance(matrix, KernelMatrix):
            raise TypeError(f"StoredKernel needs a KernelMatrix (from kernel_matrix or open_kernel_matrix), got "
                            f"{type(matrix).__name__}.")
        if not matrix.symmetric:
            raise ValueError("a kernel system needs the square matrix of the training inputs against themselves; "
                             "this store holds k(x, x2) for another x2. Build it with x2=None.")
        missing = matrix.missing_tiles()
        if missing:
            raise ValueError(f"the store {matrix.path!r} is incomplete ({len(missing)} tiles missing); run "
                             "kernel_matrix with the same arguments to finish it first.")
        super().__init__(StoreTiles(str(matrix.store.path.resolve()), matrix.store.manifest, matrix.kind), client)


class ComputedKernel(TiledKernel):
    """K v with each tile recomputed from the network description on every product: no disk, no
    N x N memory, but each product costs a full kernel computation.

    Args:
        spec: the network description; x: inputs (N, d); kind: "ntk" or "nngp";
        tile: tile side; dtype: precision of the kernel computation; client: optional Dask client;
        side_inputs: x's side inputs by name, as ``spec.kernels(x, ...)`` takes them (an
            adjacency (N, V, V) for a description with Aggregate, a mask (N, *positions)).
    """

    def __init__(self, spec: Any, x: Any, kind: str = "ntk", tile: int = 4096, dtype: torch.dtype = torch.float64,
                 client: Any = None, side_inputs: dict[str, Any] | None = None) -> None:
        if kind not in KINDS or kind == "both":
            raise ValueError(f"kind must be 'ntk' or 'nngp', got {kind!r}.")
        if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
            raise ValueError(f"tile must be a positive integer, got {tile!r}.")
        features = as_batch(x, "x", dtype).detach()
        side, _ = side_inputs_of(spec, side_inputs, features, None)
        check_pairwise_output(spec, features, "a computed kernel operator")
        super().__init__(SpecTiles(spec, features, kind, tile, side), client)


def as_operator(a: Any, client: Any = None) -> Any:
    """A linear operator with ``shape`` and ``matmul`` from a KernelMatrix, a dense tensor or array
    (in memory), or an operator (returned as is)."""
    if isinstance(a, KernelMatrix):
        return StoredKernel(a, client)
    if isinstance(a, (Tensor, np.ndarray)):
        return DenseKernel(a)
    if hasattr(a, "matmul") and hasattr(a, "shape"):
        return a
    raise TypeError(f"expected a KernelMatrix, a square tensor or array, or an operator with .shape and "
                    f".matmul; got {type(a).__name__}.")


class DenseKernel:
    """An in-memory square matrix with the operator interface (for small N and for tests)."""

    def __init__(self, a: Any) -> None:
        t = torch.as_tensor(a)
        if t.dim() != 2 or t.shape[0] != t.shape[1]:
            raise ValueError(f"a kernel matrix must be square, got shape {tuple(t.shape)}.")
        self.matrix = t
        self.storage_dtype = t.dtype

    @property
    def shape(self) -> tuple[int, int]:
        """(N, N)."""
        return tuple(self.matrix.shape)

    def matmul(self, v: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """K v for v of shape (N,) or (N, k), computed in ``dtype`` (float64 by default)."""
        return self.matrix.to(dtype) @ torch.as_tensor(v).to(dtype)
