"""The on-disk kernel store: a zarr 3 group of chunked arrays, one chunk per tile, plus a record
of which tiles are complete.

Layout (a plain zarr hierarchy; any zarr reader opens it)::

    K.zarr/zarr.json          group; attributes["torchntk"] is the manifest (see manifest.py)
    K.zarr/ntk/c/i/j          tile (i, j) of the NTK, uncompressed, one file per tile
    K.zarr/nngp/c/i/j         the same for the NNGP kernel (kind="nngp" or "both")
    K.zarr/done/c/i/j         uint8 array of shape (tile rows, tile cols): 1 where tile (i, j) is complete

Crash safety. A tile counts as done only when its ``done`` file exists, and that file is
written last:

1. the tile's chunk is written (zarr writes to a temporary file and renames it), then the chunk
   file and its directory are fsync'ed, so its bytes are on disk;
2. only then the marker is written to a temporary file, fsync'ed, atomically renamed into place
   (os.replace) and its directory fsync'ed.

A kill -9 or power loss before step 2's rename leaves no marker, and the tile is recomputed on
the next run, whatever state its chunk is in; after the rename the chunk is already durable.
Readers never look at a tile without a marker. Leftover temporary files from interrupted writes
are removed when a run resumes.

Distributed runs assume a shared filesystem: the workers write chunks into the same directory
(step 1) and the driver writes the markers (step 2) once a worker reports its tile written.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import FORMAT, check_same
from .tiles import TileGrid

DONE = "done"
_CHUNK_KEYS = {"name": "default", "separator": "/"}


def _fsync(path: Path) -> None:
    """Flush a file's or directory's data and metadata to disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):  # directories cannot be opened on some systems
        return
    try:
        os.fsync(fd)
    except OSError:  # fsync of a directory is unsupported on some filesystems (and Windows)
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that, at every instant, the file is either absent (or its
    old content) or complete: temporary file, fsync, os.replace, fsync of the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)


def read_manifest(path: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of the store at ``path``, or None if it is not a torchntk kernel store."""
    meta = Path(path) / "zarr.json"
    if not meta.is_file():
        return None
    try:
        with open(meta, encoding="utf-8") as handle:
            attributes = json.load(handle).get("attributes", {})
    except (OSError, ValueError):
        return None
    manifest = attributes.get("torchntk") if isinstance(attributes, dict) else None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def grid_of(manifest: dict[str, Any]) -> TileGrid:
    n1, n2 = manifest["shape"]
    return TileGrid(n1, n2, manifest["tile"], manifest["symmetric"])


class KernelStore:
    """Reads and writes the tiles of one store directory; see the module docstring for the layout.

    Construct with `KernelStore.open` (an existing store) or `KernelStore.create_or_resume`.
    """

    def __init__(self, path: str | os.PathLike, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.grid = grid_of(manifest)
        self._arrays: dict[str, Any] = {}
        self._done: set[tuple[int, int]] = set()

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike) -> KernelStore:
        manifest = read_manifest(path)
        if manifest is None:
            raise ValueError(f"{str(path)!r} is not a torchntk kernel store (no zarr.json with a torchntk "
                             "manifest); create one with torchntk.kernel_matrix(..., store=path).")
        return cls(path, manifest)

    @classmethod
    def create_or_resume(cls, path: str | os.PathLike, manifest: dict[str, Any]) -> KernelStore:
        """The store at ``path`` for this manifest: created if absent, resumed if it holds the same
        computation, refused (ValueError) if it holds anything else."""
        import zarr

        root = Path(path)
        if root.exists() and not root.is_dir():
            raise ValueError(f"store path {str(root)!r} is a file; give a directory path such as 'K.zarr'.")
        if root.is_dir() and any(root.iterdir()):
            stored = read_manifest(root)
            if stored is None:
                raise ValueError(f"{str(root)!r} exists and is not a torchntk kernel store; choose another "
                                 "store path (it is never overwritten).")
            check_same(stored, manifest, str(root))
        else:
            zarr.create_group(store=str(root), attributes={"torchntk": manifest}, zarr_format=3)
            _fsync(root / "zarr.json")
            _fsync(root)
        store = cls(root, manifest)
        store._ensure_arrays()
        store.remove_leftovers()
        return store

    def _ensure_arrays(self) -> None:
        """Create any array whose metadata is missing (a run killed right after creating the
        group); existing arrays are checked against the manifest."""
        import zarr

        grid = self.grid
        wanted = {name: ((grid.n1, grid.n2), (grid.tile, grid.tile), self.manifest["dtype"], float("nan"))
                  for name in self.manifest["arrays"]}
        wanted[DONE] = ((grid.rows, grid.cols), (1, 1), "uint8", 0)
        for name, (shape, chunks, dtype, fill) in wanted.items():
            if (self.path / name / "zarr.json").is_file():
                array = zarr.open_array(str(self.path / name), mode="r")
                if tuple(array.shape) != shape or tuple(array.chunks) != chunks or str(array.dtype) != dtype:
                    raise ValueError(f"array {name!r} of store {str(self.path)!r} has shape {array.shape}, "
                                     f"chunks {array.chunks}, dtype {array.dtype}, but its manifest says "
                                     f"{shape}, {chunks}, {dtype}: the store is damaged; delete it.")
                continue
            if name != DONE and self.done():
                raise ValueError(f"array {name!r} of store {str(self.path)!r} is missing although tiles are "
                                 "marked complete: the store is damaged; delete it.")
            zarr.create_array(store=str(self.path / name), shape=shape, chunks=chunks, dtype=dtype,
                              fill_value=fill, compressors=None, chunk_key_encoding=_CHUNK_KEYS,
                              zarr_format=3, overwrite=True)
            _fsync(self.path / name / "zarr.json")
            _fsync(self.path / name)

    def remove_leftovers(self) -> None:
        """Delete temporary files of writes that were interrupted (zarr's ``*.partial`` files and
        our ``.*.tmp`` markers). Call only while no other process writes to the store."""
        for name in (*self.manifest["arrays"], DONE):
            chunks = self.path / name / "c"
            if chunks.is_dir():
                for pattern in ("**/*.partial", "**/.*.tmp"):
                    for leftover in chunks.glob(pattern):
                        leftover.unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the store for one run (two runs at once would race on the
        leftovers' cleanup and do all work twice)."""
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform: the user keeps runs apart
            yield
            return
        handle = open(self.path / DONE / "lock", "a+b")  # noqa: SIM115 -- held for the whole run
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"another process is computing into the kernel store {str(self.path)!r}; "
                                   "wait for it to finish (or stop it) before running again.") from None
            yield
        finally:
            handle.close()

    # -- completion markers -------------------------------------------------------------

    def done(self, refresh: bool = True) -> set[tuple[int, int]]:
        """The stored tiles (i, j) that are complete."""
        if refresh:
            found = set()
            base = self.path / DONE / "c"
            if base.is_dir():
                for row in os.scandir(base):
                    if row.is_dir() and row.name.isdigit():
                        found.update((int(row.name), int(col.name)) for col in os.scandir(row.path)
                                     if col.name.isdigit())
            self._done = found
        return self._done

    def mark_done(self, i: int, j: int) -> None:
        """Record tile (i, j) as complete; call only after `write_tile` returned."""
        _atomic_write(self.path / DONE / "c" / str(i) / str(j), b"\x01")
        self._done.add((i, j))

    def require(self, tiles: set[tuple[int, int]]) -> None:
        """Raise ValueError unless every stored tile in ``tiles`` is complete."""
        missing = tiles - self._done
        if missing:
            missing -= self.done()
        if missing:
            total = len(self.grid.tiles())
            raise ValueError(f"tile(s) {sorted(missing)[:5]} of the kernel store {str(self.path)!r} are not "
                             f"computed yet ({len(self._done)} of {total} tiles done); run "
                             "torchntk.kernel_matrix with the same arguments again to finish the store.")

    # -- tiles ---------------------------------------------------------------------------

    def array(self, name: str) -> Any:
        if name not in self._arrays:
            import zarr

            self._arrays[name] = zarr.open_array(str(self.path / name), mode="r+")
        return self._arrays[name]

    def write_tile(self, i: int, j: int, blocks: dict[str, np.ndarray]) -> None:
        """Write tile (i, j) of each array and make it durable (not yet marked complete)."""
        (r0, r1), (c0, c1) = self.grid.row_range(i), self.grid.col_range(j)
        for name, block in blocks.items():
            self.array(name)[r0:r1, c0:c1] = block
            chunk = self.path / name / "c" / str(i) / str(j)
            _fsync(chunk)
            _fsync(chunk.parent)

    def raw_chunks(self, name: str) -> bool:
        """Whether the chunks of array ``name`` are plain little-endian C-order bytes (the only
        codec this module creates), so that `map_stored_tile` may map them directly."""
        meta = self.array(name).metadata.to_dict()
        return (meta.get("codecs") == [{"name": "bytes", "configuration": {"endian": "little"}}]
                and meta.get("chunk_key_encoding") == {"name": "default", "configuration": {"separator": "/"}})

    def map_stored_tile(self, name: str, i: int, j: int) -> np.ndarray:
        """Stored tile (i, j), i <= j when symmetric, memory-mapped straight from its chunk file
        (no copy, no decoding: the fast path of streamed products), restricted to the part that
        lies inside the matrix. The kernel asks the OS to read the file ahead right away.
        Requires `raw_chunks`; the caller checks completion (markers) beforehand."""
        grid = self.grid
        itemsize = np.dtype(self.manifest["dtype"]).itemsize
        chunk = self.path / name / "c" / str(i) / str(j)
        with open(chunk, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size != grid.tile * grid.tile * itemsize:
                raise ValueError(f"chunk {str(chunk)!r} holds {size} bytes, not {grid.tile ** 2 * itemsize}: the "
                                 "store is damaged; delete the tile's marker (done/c/i/j) and rerun kernel_matrix "
                                 "to recompute it.")
            # A private (copy-on-write) map is writable as far as numpy and torch know, though
            # nothing writes to it; reading never copies.
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_WILLNEED"):
            mapped.madvise(mmap.MADV_WILLNEED)
        tile = np.frombuffer(mapped, dtype=self.manifest["dtype"]).reshape(grid.tile, grid.tile)
        (r0, r1), (c0, c1) = grid.row_range(i), grid.col_range(j)
        return tile[:r1 - r0, :c1 - c0]

    def read_block(self, name: str, i: int, j: int, rows: slice = slice(None), cols: slice = slice(None),
                   check: bool = True) -> np.ndarray:
        """Part [rows, cols] (local to the tile) of tile (i, j) of array ``name``, read only from a
        complete tile; lower tiles of a symmetric matrix are read from their upper mirror."""
        si, sj, transposed = self.grid.stored(i, j)
        if check:
            self.require({(si, sj)})
        r0, _ = self.grid.row_range(si)
        c0, _ = self.grid.col_range(sj)
        if transposed:
            rows, cols = cols, rows
        r_lo, r_hi = _bounds(rows, self.grid.row_range(si))
        c_lo, c_hi = _bounds(cols, self.grid.col_range(sj))
        block = self.array(name)[r0 + r_lo:r0 + r_hi, c0 + c_lo:c0 + c_hi]
        return block.T if transposed else block


def _bounds(part: slice, extent: tuple[int, int]) -> tuple[int, int]:
    start, stop, _ = part.indices(extent[1] - extent[0])
    return start, max(start, stop)
