"""File primitives of the kernel store: durable and atomic writes, a directory lock, cached
sha256 checksums and memory-mapped reads.

They know nothing of zarr or tiles; `torchntk.scale.store` builds its crash safety, integrity
checks and one-run-at-a-time rule from them (its module docstring says how).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

TEMPORARY = ".*.tmp"
"""Glob pattern of the temporary files `atomic_write` leaves behind when it is interrupted."""


def fsync(path: Path) -> None:
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


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that, at every instant, the file is either absent (or its
    old content) or complete: temporary file, fsync, os.replace, fsync of the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync(path.parent)


_verified_lock = threading.Lock()
_verified: dict[tuple[str, int, int, int], bytes] = {}


def _file_digest(path: Path) -> bytes:
    """sha256 of the file at ``path``, read in 4 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.digest()


def verified_digest(path: Path) -> bytes:
    """sha256 of the file at ``path``, cached per file version (device, inode, size, mtime), so
    that streaming a store many times (conjugate gradients) hashes each tile once."""
    stat = path.stat()
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _verified_lock:
        cached = _verified.get(key)
    if cached is None:
        cached = _file_digest(path)
        with _verified_lock:
            _verified[key] = cached
    return cached


@contextlib.contextmanager
def directory_lock(root: Path) -> Iterator[bool]:
    """Hold an exclusive flock on the directory ``root``; yields True when locked, False where
    locks are unavailable (no fcntl, or a filesystem that refuses them: the user keeps runs
    apart). A lock held by another process raises RuntimeError."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform
        yield False
        return
    fd = os.open(root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another process is computing into the kernel store {str(root)!r}; "
                               "wait for it to finish (or stop it) before running again.") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            yield False
            return
        yield True
    finally:
        os.close(fd)


def map_file(path: Path, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """The raw C-order contents of the file at ``path`` as an array of ``dtype`` and ``shape``,
    memory-mapped (no copy, no decoding); the kernel is asked to read the file ahead right away."""
    with open(path, "rb") as handle:
        # A private (copy-on-write) map is writable as far as numpy and torch know, though
        # nothing writes to it; reading never copies.
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_WILLNEED"):
        mapped.madvise(mmap.MADV_WILLNEED)
    return np.frombuffer(mapped, dtype=dtype).reshape(shape)
