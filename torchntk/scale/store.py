"""The on-disk kernel store: a zarr 3 group of chunked arrays, one chunk per tile, plus a record
of which tiles are complete.

Layout (a plain zarr hierarchy; any zarr reader opens it)::

    K.zarr/zarr.json          group; attributes["torchntk"] is the manifest (see manifest.py)
    K.zarr/ntk/c/i/j          tile (i, j) of the NTK, uncompressed, one file per tile
    K.zarr/nngp/c/i/j         the same for the NNGP kernel (kind="nngp" or "both")
    K.zarr/done/c/i/j/0       uint8 array of shape (tile rows, tile cols, 32 x arrays): the
                              completion marker of tile (i, j), holding the sha256 of each
                              array's chunk file (all zeros, the fill value, while not complete)

Crash safety. A tile counts as done only when its ``done`` file exists, and that file is
written last:

1. the tile's chunk is written (zarr writes to a temporary file and renames it), then the chunk
   file and its directory are fsync'ed, so its bytes are on disk, and its sha256 is taken from
   the file itself;
2. only then the marker (the checksums) is written to a temporary file, fsync'ed, atomically
   renamed into place (os.replace) and its directory fsync'ed.

Integrity. Every chunk is read only after its checksum matched the marker's (once per process
and file version, see `files.verified_digest`), so a tile deleted, truncated or overwritten
after it was recorded is reported, never read. A resumed run checks that every marked tile's
files exist with the right size (``verify=True``: also their checksums) and recomputes the ones
that fail; ``torchntk store verify`` checks a whole store.

Concurrency. A run holds an exclusive lock (flock on the store directory itself, so locking
creates no file) from before the store is created or its temporary files are cleaned until it
ends; a second run is refused with a RuntimeError. A complete store on read-only media is
opened for reading without a lock.

A kill -9 or power loss before step 2's rename leaves no marker, and the tile is recomputed on
the next run, whatever state its chunk is in; after the rename the chunk is already durable.
Readers never look at a tile without a marker. Leftover temporary files from interrupted writes
are removed when a run resumes, under the lock.

Distributed runs assume a shared filesystem: the workers write chunks into the same directory
(step 1) and the driver writes the markers (step 2) once a worker reports its tile written.

The file primitives these steps use (fsync, atomic writes, the lock, checksums, memory maps)
are in `torchntk.scale.files`.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._json import read_json
from .files import TEMPORARY, atomic_write, directory_lock, fsync, map_file, verified_digest
from .manifest import FORMAT, check_same, validate_manifest
from .tiles import TileGrid

DONE = "done"
_CHUNK_KEYS = {"name": "default", "separator": "/"}


def read_manifest(path: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of the store at ``path``, or None if it is not a torchntk kernel store.

    A store of another layout version, or a manifest with missing or ill-typed fields, raises
    a ValueError saying so (rather than being mistaken for a foreign directory); so does a
    folder laid out as a torchntk store whose zarr.json is unreadable or lacks the manifest."""
    meta = Path(path) / "zarr.json"
    document, problem = None, "is missing"
    if meta.is_file():
        try:
            document, problem = read_json(meta), "has no torchntk manifest"
        except (OSError, ValueError) as exc:
            problem = f"cannot be read ({str(exc).rstrip('.')})"
    attributes = document.get("attributes", {}) if isinstance(document, dict) else {}
    manifest = attributes.get("torchntk") if isinstance(attributes, dict) else None
    if not isinstance(manifest, dict):
        if _laid_out_as_store(Path(path)):
            raise ValueError(f"{str(path)!r} is a damaged torchntk kernel store: its zarr.json, which holds the "
                             f"manifest (what the tiles were computed from), {problem}. "
                             "Without it no tile can be trusted or resumed, and `torchntk store verify --repair` "
                             "cannot rebuild it: restore zarr.json from a backup, or delete the store and recompute "
                             "it.")
        return None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is a torchntk kernel store of layout {manifest.get('format')!r}, not "
                         f"{FORMAT!r} (the one this version reads and writes): delete it and recompute it.")
    validate_manifest(manifest, str(path))
    return manifest


def _laid_out_as_store(root: Path) -> bool:
    """Whether ``root`` holds the arrays a torchntk store has beside its zarr.json: the
    completion markers and at least one kernel (names no other program is likely to combine)."""
    arrays = [root / name / "zarr.json" for name in (DONE, "ntk", "nngp")]
    return arrays[0].is_file() and any(array.is_file() for array in arrays[1:])


def grid_of(manifest: dict[str, Any]) -> TileGrid:
    """The tile grid a manifest describes (its shape, tile side and symmetry)."""
    n1, n2 = manifest["shape"]
    return TileGrid(n1, n2, manifest["tile"], manifest["symmetric"])


DIGEST = 32
"""Bytes of one sha256 checksum in a completion marker."""


class KernelStore:
    """Reads and writes the tiles of one store directory; see the module docstring for the layout.

    Construct with `KernelStore.open` (an existing store, for reading) or `KernelStore.locked`
    (a run that computes into it).
    """

    def __init__(self, path: str | os.PathLike, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.grid = grid_of(manifest)
        self._arrays: dict[str, Any] = {}
        self._done: set[tuple[int, int]] = set()
        self.read_only = False

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike) -> KernelStore:
        """The existing store at ``path``, its arrays checked against its manifest.

        Raises:
            ValueError: ``path`` holds no torchntk manifest, or its arrays do not match it.
        """
        manifest = read_manifest(path)
        if manifest is None:
            raise ValueError(f"{str(path)!r} is not a torchntk kernel store (no zarr.json with a torchntk "
                             "manifest); create one with torchntk.kernel_matrix(..., store=path).")
        store = cls(path, manifest)
        store.check_arrays()
        return store

    @classmethod
    @contextlib.contextmanager
    def locked(cls, path: str | os.PathLike, manifest: dict[str, Any]) -> Iterator[KernelStore]:
        """The store at ``path`` for this manifest, held under an exclusive lock for one run:
        created if absent, resumed if it holds the same computation, refused (ValueError) if it
        holds anything else. The lock is taken before anything is created or cleaned, so a second
        process gets the lock's RuntimeError and touches nothing. A complete store on read-only
        media is yielded unlocked with ``read_only`` True (it can be read, not computed into)."""
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise ValueError(f"store path {str(root)!r} is a file; give a directory path such as 'K.zarr'.")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if not root.is_dir():
                raise ValueError(f"cannot create the kernel store {str(root)!r}: {exc.strerror or exc}.") from None
        held = contextlib.ExitStack()
        try:
            held.enter_context(directory_lock(root))
            store = cls._create_or_resume(root, manifest)
        except OSError as exc:
            held.close()
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            store = cls._read_only(root, manifest, exc)
        except BaseException:
            held.close()
            raise
        with held:
            yield store

    @classmethod
    def _create_or_resume(cls, root: Path, manifest: dict[str, Any]) -> KernelStore:
        """Under the lock: the store for ``manifest`` at ``root``, created if empty."""
        import zarr

        stored = read_manifest(root)
        if stored is None and any(root.iterdir()):
            raise ValueError(f"{str(root)!r} exists and is not a torchntk kernel store; choose another "
                             "store path (it is never overwritten).")
        if stored is not None:
            check_same(stored, manifest, str(root))
        else:
            zarr.create_group(store=str(root), attributes={"torchntk": manifest}, zarr_format=3)
            fsync(root / "zarr.json")
            fsync(root)
        store = cls(root, manifest)
        store._ensure_arrays()
        store.remove_leftovers()
        return store

    @classmethod
    def _read_only(cls, root: Path, manifest: dict[str, Any], exc: OSError) -> KernelStore:
        """A complete store that cannot be written (read-only media): usable for reading."""
        stored = read_manifest(root)
        if stored is None:
            raise ValueError(f"cannot create the kernel store {str(root)!r}: {exc.strerror or exc}.") from None
        check_same(stored, manifest, str(root))
        store = cls(root, manifest)
        store.check_arrays()
        store.read_only = True
        missing = [t for t in store.grid.tiles() if t not in store.done()]
        if missing:
            raise ValueError(f"the kernel store {str(root)!r} cannot be written ({exc.strerror or exc}) and "
                             f"{len(missing)} tile(s) are still to compute; make it writable, or copy it to "
                             "writable storage, and run again.") from None
        return store

    def check_writable(self, missing: int) -> None:
        """Raise ValueError if ``missing`` tiles are to be computed but the store cannot be
        written (read-only media, permissions): before the work, not at the first write."""
        import tempfile

        try:
            with tempfile.NamedTemporaryFile(dir=self.path / DONE, prefix=".probe-", suffix=".tmp"):
                pass
        except OSError as exc:
            raise ValueError(f"the kernel store {str(self.path)!r} cannot be written ({exc.strerror or exc}) and "
                             f"{missing} tile(s) are still to compute; make it writable, or copy it to "
                             "writable storage, and run again.") from None

    def check_arrays(self) -> None:
        """Raise ValueError unless every array's metadata (shape, chunks, dtype, raw codec) is
        the one the manifest implies; a missing array is reported too."""
        for name, wanted in self._wanted_arrays().items():
            if not (self.path / name / "zarr.json").is_file():
                raise ValueError(f"array {name!r} of store {str(self.path)!r} is missing: the store is damaged; "
                                 "delete it.")
            shape, chunks, dtype, _ = wanted
            self._check_array(name, shape, chunks, dtype)

    def _wanted_arrays(self) -> dict[str, tuple]:
        """{array name: (shape, chunks, dtype, fill value)} that the manifest implies, markers included."""
        grid = self.grid
        wanted = {name: ((grid.n1, grid.n2), (grid.tile, grid.tile), self.manifest["dtype"], float("nan"))
                  for name in self.manifest["arrays"]}
        width = DIGEST * len(self.manifest["arrays"])
        wanted[DONE] = ((grid.rows, grid.cols, width), (1, 1, width), "uint8", 0)
        return wanted

    def _check_array(self, name: str, shape: tuple, chunks: tuple, dtype: str) -> None:
        """Raise ValueError unless array ``name`` has this metadata and torchntk's raw codec."""
        import zarr

        try:
            array = zarr.open_array(str(self.path / name), mode="r")
        except Exception as exc:  # zarr raises many types for bad metadata
            raise ValueError(f"array {name!r} of store {str(self.path)!r} has unreadable metadata "
                             f"({type(exc).__name__}: {exc}): the store is damaged; delete it.") from None
        if tuple(array.shape) != shape or tuple(array.chunks) != chunks or str(array.dtype) != dtype:
            raise ValueError(f"array {name!r} of store {str(self.path)!r} has shape {array.shape}, "
                             f"chunks {array.chunks}, dtype {array.dtype}, but its manifest says "
                             f"{shape}, {chunks}, {dtype}: the store is damaged; delete it.")
        meta = array.metadata.to_dict()
        codecs = meta.get("codecs")
        raw = (isinstance(codecs, (list, tuple)) and len(codecs) == 1 and isinstance(codecs[0], dict)
               and codecs[0].get("name") == "bytes"
               and codecs[0].get("configuration", {"endian": "little"}).get("endian", "little") == "little")
        if not raw or meta.get("chunk_key_encoding") != {"name": "default", "configuration": {"separator": "/"}}:
            raise ValueError(f"array {name!r} of store {str(self.path)!r} has codecs {codecs} and chunk keys "
                             f"{meta.get('chunk_key_encoding')}, but torchntk writes raw little-endian chunks "
                             "under '/'-separated keys: the array's metadata was changed; delete the store.")

    def _ensure_arrays(self) -> None:
        """Create any array whose metadata is missing (a run killed right after creating the
        group); existing arrays are checked against the manifest."""
        import zarr

        for name, (shape, chunks, dtype, fill) in self._wanted_arrays().items():
            if (self.path / name / "zarr.json").is_file():
                self._check_array(name, shape, chunks, dtype)
                continue
            if name != DONE and self.done():
                raise ValueError(f"array {name!r} of store {str(self.path)!r} is missing although tiles are "
                                 "marked complete: the store is damaged; delete it.")
            zarr.create_array(store=str(self.path / name), shape=shape, chunks=chunks, dtype=dtype,
                              fill_value=fill, compressors=None, chunk_key_encoding=_CHUNK_KEYS,
                              zarr_format=3, overwrite=True)
            fsync(self.path / name / "zarr.json")
            fsync(self.path / name)

    def remove_leftovers(self) -> None:
        """Delete temporary files of writes that were interrupted (zarr's ``*.partial`` files and
        our ``.*.tmp`` markers). Call only under the lock (`locked`), so that no other process
        is writing them."""
        for name in (*self.manifest["arrays"], DONE):
            chunks = self.path / name / "c"
            if chunks.is_dir():
                for pattern in ("**/*.partial", f"**/{TEMPORARY}"):
                    for leftover in chunks.glob(pattern):
                        leftover.unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store's exclusive lock (as a run does; see `locked`)."""
        with directory_lock(self.path):
            yield

    # -- completion markers -------------------------------------------------------------

    def marker(self, i: int, j: int) -> Path:
        """The completion marker file of stored tile (i, j)."""
        return self.path / DONE / "c" / str(i) / str(j) / "0"

    def chunk(self, name: str, i: int, j: int) -> Path:
        """The chunk file of stored tile (i, j) of array ``name``."""
        return self.path / name / "c" / str(i) / str(j)

    def done(self, refresh: bool = True) -> set[tuple[int, int]]:
        """The stored tiles (i, j) that are recorded complete (their marker exists)."""
        if refresh:
            found = set()
            base = self.path / DONE / "c"
            if base.is_dir():
                for row in os.scandir(base):
                    if row.is_dir() and row.name.isdigit():
                        found.update((int(row.name), int(col.name)) for col in os.scandir(row.path)
                                     if col.name.isdigit() and os.path.isfile(os.path.join(col.path, "0")))
            self._done = found
        return self._done

    def mark_done(self, i: int, j: int, digests: bytes) -> None:
        """Record tile (i, j) as complete with the checksums `write_tile` returned."""
        if len(digests) != DIGEST * len(self.manifest["arrays"]):
            raise ValueError(f"a completion marker holds {DIGEST} bytes per array, got {len(digests)}.")
        atomic_write(self.marker(i, j), digests)
        self._done.add((i, j))

    def unmark(self, i: int, j: int) -> None:
        """Forget that tile (i, j) is complete, so the next run recomputes it."""
        self.marker(i, j).unlink(missing_ok=True)
        fsync(self.marker(i, j).parent)
        self._done.discard((i, j))

    def recorded_digest(self, name: str, i: int, j: int) -> bytes:
        """The checksum of array ``name``'s chunk of tile (i, j), as its marker records it."""
        try:
            data = self.marker(i, j).read_bytes()
        except FileNotFoundError:
            raise ValueError(f"tile ({i}, {j}) of the kernel store {str(self.path)!r} is not computed yet; run "
                             "torchntk.kernel_matrix with the same arguments again to finish the store.") from None
        arrays = self.manifest["arrays"]
        if len(data) != DIGEST * len(arrays):
            raise ValueError(f"the completion marker of tile ({i}, {j}) of the kernel store {str(self.path)!r} "
                             f"holds {len(data)} bytes, not {DIGEST * len(arrays)}: it is damaged; run "
                             "`torchntk store verify --repair` on the store, then kernel_matrix again.")
        at = arrays.index(name) * DIGEST
        return data[at:at + DIGEST]

    def tile_problem(self, i: int, j: int, checksum: bool = True) -> str | None:
        """Why stored tile (i, j) cannot be trusted (None when it can): a missing or wrongly
        sized chunk file, a damaged marker or (``checksum``) a chunk whose sha256 differs from
        the marker's. Assumes the tile is marked complete."""
        size = self.grid.tile ** 2 * np.dtype(self.manifest["dtype"]).itemsize
        for name in self.manifest["arrays"]:
            chunk = self.chunk(name, i, j)
            try:
                actual = chunk.stat().st_size
            except FileNotFoundError:
                return f"the {name} chunk file is missing"
            if actual != size:
                return f"the {name} chunk file holds {actual} bytes, not {size}"
            if checksum:
                try:
                    recorded = self.recorded_digest(name, i, j)
                except ValueError:
                    return "its completion marker is damaged"
                if verified_digest(chunk) != recorded:
                    return f"the {name} chunk's sha256 differs from the one recorded when it was written"
        return None

    def check_tiles(self, checksum: bool = False, repair: bool = False) -> dict[tuple[int, int], str]:
        """{tile: problem} for every marked tile that fails `tile_problem`; with ``repair`` their
        markers are removed so that the next run recomputes them (needs the lock)."""
        problems = {}
        for i, j in sorted(self.done()):
            problem = self.tile_problem(i, j, checksum)
            if problem is not None:
                problems[(i, j)] = problem
        if repair:
            try:
                for i, j in problems:
                    self.unmark(i, j)
            except OSError as exc:
                raise ValueError(f"the kernel store {str(self.path)!r} has {len(problems)} damaged tile(s) "
                                 f"({', '.join(map(str, list(problems)[:5]))}) but cannot be written "
                                 f"({exc.strerror or exc}) to recompute them; make it writable and run "
                                 "again.") from None
        return problems

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

    def verify_tile(self, name: str, i: int, j: int) -> None:
        """Raise ValueError unless stored tile (i, j) of ``name`` has the size and checksum its
        marker records: called before every read, so damage is reported, never read."""
        problem = self.tile_problem(i, j, checksum=False)
        if problem is None and verified_digest(self.chunk(name, i, j)) != self.recorded_digest(name, i, j):
            problem = f"the {name} chunk's sha256 differs from the one recorded when it was written"
        if problem is not None:
            raise ValueError(f"tile ({i}, {j}) of the kernel store {str(self.path)!r} is damaged ({problem}); "
                             "rerun torchntk.kernel_matrix with the same arguments and verify=True to recompute "
                             "it (or `torchntk store verify --repair` on the store, then kernel_matrix).")

    # -- tiles ---------------------------------------------------------------------------

    def array(self, name: str) -> Any:
        """The zarr array ``name`` ("nngp" or "ntk") of the store, opened once (read-only when the store is)."""
        if name not in self._arrays:
            import zarr

            mode = "r" if self.read_only else "r+"
            self._arrays[name] = zarr.open_array(str(self.path / name), mode=mode)
        return self._arrays[name]

    def write_tile(self, i: int, j: int, blocks: dict[str, np.ndarray]) -> bytes:
        """Write tile (i, j) of each array and make it durable (not yet marked complete).
        Returns the checksums for its marker: the sha256 of each array's chunk file as written,
        in the manifest's order of arrays."""
        (r0, r1), (c0, c1) = self.grid.row_range(i), self.grid.col_range(j)
        for name, block in blocks.items():
            self.array(name)[r0:r1, c0:c1] = block
            chunk = self.chunk(name, i, j)
            fsync(chunk)
            fsync(chunk.parent)
        return b"".join(verified_digest(self.chunk(name, i, j)) for name in self.manifest["arrays"])

    def raw_chunks(self, name: str) -> bool:
        """Whether the chunks of array ``name`` are plain little-endian C-order bytes (the only
        codec this module creates, and the only one `check_arrays` accepts), so that
        `map_stored_tile` may map them directly."""
        meta = self.array(name).metadata.to_dict()
        # zarr gives the codecs as a tuple or a list depending on its version: compare as a list.
        return (list(meta.get("codecs") or ()) == [{"name": "bytes", "configuration": {"endian": "little"}}]
                and meta.get("chunk_key_encoding") == {"name": "default", "configuration": {"separator": "/"}})

    def map_stored_tile(self, name: str, i: int, j: int) -> np.ndarray:
        """Stored tile (i, j), i <= j when symmetric, memory-mapped straight from its chunk file
        (no copy, no decoding: the fast path of streamed products), restricted to the part that
        lies inside the matrix. The kernel asks the OS to read the file ahead right away.
        Requires `raw_chunks`; the tile's size and checksum are verified first (`verify_tile`)."""
        grid = self.grid
        self.verify_tile(name, i, j)
        tile = map_file(self.chunk(name, i, j), self.manifest["dtype"], (grid.tile, grid.tile))
        (r0, r1), (c0, c1) = grid.row_range(i), grid.col_range(j)
        return tile[:r1 - r0, :c1 - c0]

    def read_block(self, name: str, i: int, j: int, rows: slice = slice(None), cols: slice = slice(None),
                   check: bool = True) -> np.ndarray:
        """Part [rows, cols] (local to the tile) of tile (i, j) of array ``name``, read only from a
        complete tile; lower tiles of a symmetric matrix are read from their upper mirror."""
        si, sj, transposed = self.grid.stored(i, j)
        if check:
            self.require({(si, sj)})
        self.verify_tile(name, si, sj)  # zarr would read a missing chunk as NaN, a damaged one as garbage
        r0, _ = self.grid.row_range(si)
        c0, _ = self.grid.col_range(sj)
        if transposed:
            rows, cols = cols, rows
        r_lo, r_hi = _bounds(rows, self.grid.row_range(si))
        c_lo, c_hi = _bounds(cols, self.grid.col_range(sj))
        block = self.array(name)[r0 + r_lo:r0 + r_hi, c0 + c_lo:c0 + c_hi]
        return block.T if transposed else block


def _bounds(part: slice, extent: tuple[int, int]) -> tuple[int, int]:
    """(start, stop) of the slice ``part`` within a tile spanning ``extent``, never reversed."""
    start, stop, _ = part.indices(extent[1] - extent[0])
    return start, max(start, stop)
