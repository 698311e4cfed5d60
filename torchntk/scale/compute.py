"""`kernel_matrix`: an N1 x N2 NTK or NNGP matrix computed tile by tile into an on-disk store,
resumable after any interruption and runnable on a Dask cluster."""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
import warnings
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._inputs import as_pair_batches as as_pair
from .._inputs import check_pairwise_output
from .manifest import KINDS, build_manifest
from .matrix import KernelMatrix
from .progress import RunSummary, TileProgress
from .store import KernelStore
from .tiles import TileGrid, compute_tile, side_inputs_of, single_threaded_ops, tile_workers

DEFAULT_STORE_TILE = 4096
"""Stored tile side: a float32 tile is 64 MiB, large enough that per-tile overheads (a file, an
fsync, a task) are negligible and small enough that a few tiles fit in memory at once."""

MAX_STORE_TILE = 32768
"""Largest stored tile side: every chunk is written whole (tile^2 numbers, padded at the edges),
so a larger tile would only allocate and write gigabytes of padding."""

STALL_ENV = "TORCHNTK_SCALE_STALL_BEFORE_RECORD"
"""Test hook: when set to k, the run stops (sleeps) after writing its k-th tile to disk and
before recording it complete, so tests can kill -9 the process at the worst instant."""


def _stall_if_asked(count: int, i: int, j: int) -> None:
    target = os.environ.get(STALL_ENV)
    if target is not None and count == int(target):
        print(f"torchntk.scale: test hook {STALL_ENV}={target}: stalled before recording tile ({i}, {j})",
              file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)


class _Recorder:
    """Marks tiles complete (after their data is durable) and advances the progress bar."""

    def __init__(self, store: KernelStore, progress: TileProgress) -> None:
        self.store = store
        self.progress = progress
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, i: int, j: int, digests: bytes) -> None:
        with self._lock:
            self.count += 1
            count = self.count
        _stall_if_asked(count, i, j)
        self.store.mark_done(i, j, digests)
        self.progress.advance(self.store.grid.entries(i, j))


def _run_in_process(spec: Any, x1: Tensor, x2: Tensor | None, store: KernelStore, todo: list[tuple[int, int]],
                    record: _Recorder, side1: dict[str, Tensor], side2: dict[str, Tensor] | None) -> None:
    """Compute tiles here, ``tile_workers`` at a time (one thread each), while one background
    thread writes finished tiles and records them. At most 2 * workers tiles are in flight (and
    in memory); on any exception, Ctrl-C included, the tiles already computing are finished,
    written and recorded before the exception propagates, so no finished work is lost."""
    arrays = tuple(store.manifest["arrays"])
    workers = tile_workers(x1.device)
    queue = iter(todo)
    computing: dict[Future, tuple[int, int]] = {}
    writes: deque[Future] = deque()

    def write(i: int, j: int, blocks: dict) -> None:
        record(i, j, store.write_tile(i, j, blocks))

    def submit(computers: ThreadPoolExecutor) -> None:
        for i, j in queue:
            computing[computers.submit(compute_tile, spec, x1, x2, arrays, store.grid, i, j, side1, side2)] = (i, j)
            if len(computing) >= workers:
                return

    def hand_over(finished: set[Future], writer: ThreadPoolExecutor) -> None:
        for future in finished:
            i, j = computing.pop(future)
            blocks = future.result()
            while len(writes) >= workers:
                writes.popleft().result()
            writes.append(writer.submit(write, i, j, blocks))

    with single_threaded_ops(workers > 1), \
            ThreadPoolExecutor(workers, thread_name_prefix="torchntk-tile") as computers, \
            ThreadPoolExecutor(1, thread_name_prefix="torchntk-tile-writer") as writer:
        try:
            submit(computers)
            while computing:
                finished, _ = wait(computing, return_when=FIRST_COMPLETED)
                hand_over(finished, writer)
                submit(computers)
        finally:
            for future in list(computing):
                if future.cancel():
                    computing.pop(future)
            finished = {f for f in wait(computing).done if f.exception() is None}
            for future in set(computing) - finished:
                computing.pop(future)
            hand_over(finished, writer)
            while writes:
                writes.popleft().result()


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def _write_failure(exc: OSError, store: KernelStore, recorded: int, todo: int) -> OSError:
    """The error a run that could not write its store raises: the store, how far it got, that the
    tiles recorded so far are kept, and how to resume (for a full disk: how much it still needs)."""
    left = todo - recorded
    what = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in _NO_SPACE:
        per_tile = store.grid.tile ** 2 * np.dtype(store.manifest["dtype"]).itemsize * len(store.manifest["arrays"])
        fix = (f"free about {_size(left * per_tile)} on its disk (or a quota) for the {left} tile(s) left, or move "
               "the store to a larger disk")
    else:
        fix = "fix the cause"
    message = (f"cannot write the kernel store {str(store.path)!r}: {what}{where}, after {recorded} of {todo} "
               f"tile(s) of this run. The tiles recorded complete are kept; {fix}, then call kernel_matrix again "
               "with the same arguments to resume.")
    return OSError(exc.errno, message)


def _size(count: int) -> str:
    """A byte count in GiB or MiB, e.g. "3.2 GiB"."""
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{max(count / 2**20, 0.1):.1f} MiB"


def kernel_matrix(spec: Any, x: Any, x2: Any | None = None, kind: str = "ntk", store: str | os.PathLike | None = None,
                  tile: int = DEFAULT_STORE_TILE, dtype: torch.dtype = torch.float32, client: Any = None,
                  progress: bool = True, verify: bool = False,
                  side_inputs: dict[str, Any] | None = None) -> KernelMatrix | tuple[KernelMatrix, KernelMatrix]:
    r"""The infinite-width kernel matrix of ``spec`` on (x, x2), computed tile by tile into an
    on-disk zarr store; resumable, and distributable over a Dask cluster.

    Each (tile, tile) block is :math:`\Theta^{(L)}(x_I, x_J)` (kind="ntk", Theorem 1) or
    :math:`\Sigma^{(L)}(x_I, x_J)` (kind="nngp", Proposition 1), exactly as ``spec.kernels``
    computes it; for x2 None only the tiles on and above the diagonal are computed and the matrix
    is read back symmetric.
    Temporary memory is a few tiles per CPU thread (tiles are computed in parallel, one thread
    each, while a background thread writes finished ones), whatever N.

    Resuming: call again with the same arguments after any interruption (Ctrl-C, kill -9, power
    loss) and only tiles not yet recorded complete are computed. The store records the network
    description, kind, dtype, tile and sha256 fingerprints of x and x2 and of each side input;
    a call with anything different (another adjacency included) is refused with ValueError
    (never mixed). See `torchntk.scale.store` for the
    crash-safety protocol.

    Integrity: on resume every tile recorded complete is checked to have its chunk files at
    the right size (with ``verify=True`` also their sha256 against the marker's); a tile that
    fails is recomputed, with a warning that names it. Reads verify each tile's checksum.

    Args:
        spec: a network description (`torchntk.mlp`, `torchntk.serial`).
        x: inputs of shape (N1, d), torch tensor (any device) or numpy array.
        x2: inputs of shape (N2, d), or None for x against itself.
        kind: "ntk", "nngp", or "both" (two arrays; returns (nngp, ntk) like spec.kernels).
        store: directory of the zarr store, e.g. "K.zarr" (created if absent, resumed if present).
        tile: side of the stored tiles (zarr chunks). A resumed store must use the same tile.
        dtype: torch.float32 (default; half the disk) or torch.float64: both the precision of
            the computation and of the stored numbers.
        client: a ``dask.distributed.Client`` or a scheduler address: tiles are computed by its
            workers, which write them straight into the store (the store directory must be on a
            filesystem shared by the workers and this process). None computes here.
        progress: show a progress bar (entries/s, time left) and a summary on stderr.
        verify: also check the sha256 of every stored tile before resuming (reads the whole
            store once); damaged tiles are recomputed.
        side_inputs: the side inputs, by name, as ``spec.kernels`` takes them: for x2 None one
            value each, ``{"adjacency": A}`` with A (N1, V, V) for a description with
            `torchntk.Aggregate`, ``{"mask": m}`` with m (N1, *positions); with x2 a pair each,
            ``{"adjacency": (A1, A2)}``. Each tile takes the rows of its examples. Checked whole
            before any work; never modified.

    Returns:
        A `KernelMatrix` (array-like, shape (N1, N2)), or (nngp, ntk) for kind="both". Each
        carries ``summary``: tiles computed and skipped, seconds, entries/s.

    Example:
        >>> import os, tempfile
        >>> import numpy as np, torchntk
        >>> x, store = np.random.default_rng(0).normal(size=(200, 3)), os.path.join(tempfile.mkdtemp(), "K.zarr")
        >>> K = torchntk.kernel_matrix(torchntk.mlp(4), x, store=store, tile=128, progress=False)
        >>> K[:100, :100].shape, np.asarray(K).shape
        ((100, 100), (200, 200))
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}.")
    if store is None:
        raise ValueError("kernel_matrix needs store=: a directory path for the on-disk matrix, e.g. "
                         "store='K.zarr' (it is created if absent and resumed if present).")
    if not isinstance(store, (str, os.PathLike)):
        raise TypeError(f"store must be a directory path (str or os.PathLike), got {type(store).__name__}.")
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a positive integer (e.g. 4096), got {tile!r}.")
    if tile > MAX_STORE_TILE:
        raise ValueError(f"tile must be at most {MAX_STORE_TILE} (each stored chunk holds tile^2 numbers: "
                         f"{MAX_STORE_TILE}^2 float32 is 4 GiB), got {tile}; the default 4096 suits any N.")
    if not hasattr(spec, "layers") or not hasattr(spec, "kernels"):
        raise TypeError(f"spec must be a network description from torchntk.mlp or torchntk.serial, got "
                        f"{type(spec).__name__}.")
    x1, t2, _ = as_pair(x, x2, dtype)
    side1, side2 = side_inputs_of(spec, side_inputs, x1, t2)
    check_pairwise_output(spec, x1, "a kernel store")
    manifest = build_manifest(spec, x1, t2, kind, tile, dtype, side1, side2)
    with KernelStore.locked(store, manifest) as kernel_store:
        grid: TileGrid = kernel_store.grid
        damaged = {} if kernel_store.read_only else kernel_store.check_tiles(checksum=verify, repair=True)
        if damaged:
            listed = "; ".join(f"tile {t}: {why}" for t, why in list(damaged.items())[:5])
            warnings.warn(f"kernel store {str(kernel_store.path)!r}: {len(damaged)} tile(s) recorded complete were "
                          f"damaged on disk and are recomputed ({listed}{'; ...' if len(damaged) > 5 else ''}).",
                          UserWarning, stacklevel=2)
        done = kernel_store.done()
        schedule = grid.tiles()
        todo = [t for t in schedule if t not in done]
        if todo:
            kernel_store.check_writable(len(todo))
        start = time.perf_counter()
        with TileProgress(len(schedule), len(schedule) - len(todo), f"{kind} tiles", progress) as bar:
            record = _Recorder(kernel_store, bar)
            try:
                if todo and client is not None:
                    from .distributed import run_on_dask

                    run_on_dask(client, spec, x1, t2, kernel_store, todo, record, side1, side2)
                elif todo:
                    _run_in_process(spec, x1, t2, kernel_store, todo, record, side1, side2)
            except OSError as exc:
                raise _write_failure(exc, kernel_store, record.count, len(todo)) from exc
        summary = RunSummary(tiles=len(schedule), computed=record.count, skipped=len(schedule) - len(todo),
                             seconds=time.perf_counter() - start,
                             entries=sum(grid.entries(i, j) for i, j in todo), features=x1.shape[1],
                             damaged=len(damaged))
        bar.report(summary, str(kernel_store.path))
    views = tuple(KernelMatrix(kernel_store, name, summary) for name in manifest["arrays"])
    return views[0] if len(views) == 1 else views
