"""Reading .npy and .npz files from users without trusting them: never pickle, and the header
checked against the file's size before anything is allocated.

``numpy.load(..., allow_pickle=False)`` alone reports a text file named .npy, or a truncated
one, as "pickled data", and a 200-byte file whose header claims 10^12 elements as an
allocation failure. Here each of those cases is one ValueError saying what the file really is.
"""

from __future__ import annotations

import math
import os
import zipfile
from typing import IO

import numpy as np

_MAGIC = b"\x93NUMPY"


def _header(handle: IO[bytes], size: int) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy stream at ``handle`` of ``size`` bytes, after
    checking that it is a .npy stream holding numbers and that its data fit in ``size``."""
    start = handle.read(len(_MAGIC))
    if start != _MAGIC:
        kind = "empty" if not start else "a text file" if _looks_like_text(start) else "not a NumPy file"
        raise ValueError(f"is {kind}, not a NumPy .npy array (a .npy file starts with the bytes \\x93NUMPY); "
                         "save arrays with numpy.save, or give a text table a .csv name.")
    handle.seek(0)
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, EOFError, OSError, SyntaxError) as exc:
        raise ValueError(f"has a damaged or truncated .npy header ({exc}); rewrite it with numpy.save.") from None
    if dtype.hasobject:
        raise ValueError("holds Python objects, which cannot be read without pickle (never used here); "
                         "store numeric arrays only.")
    needed = math.prod(shape) * dtype.itemsize
    available = size - handle.tell()
    if needed > available:
        raise ValueError(f"is truncated or damaged: its header declares shape {tuple(shape)} of {dtype} "
                         f"({needed:,} bytes of data) but only {max(available, 0):,} bytes follow; "
                         "rewrite it with numpy.save.")
    return shape, fortran, dtype


def _looks_like_text(start: bytes) -> bool:
    return all(32 <= b < 127 or b in (9, 10, 13) for b in start)


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """The array in a .npy file, or a ValueError (message starting with what the file is)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        _header(handle, size)
        handle.seek(0)
        return np.lib.format.read_array(handle, allow_pickle=False)


class NpzArchive:
    """The arrays of an .npz file, read one by one with the same checks as `read_npy`.

    Use as a context manager; ``files`` lists the array names, ``archive[name]`` reads one.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path
        if not zipfile.is_zipfile(path):
            raise ValueError("is not an .npz file (an .npz file is a zip archive written by numpy.savez); "
                             "save arrays with numpy.savez.")
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"is a damaged zip archive ({exc}); rewrite it with numpy.savez.") from None
        members = [info for info in self._zip.infolist() if not info.is_dir()]
        self._members = {info.filename.removesuffix(".npy"): info for info in members}
        self.files = list(self._members)

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def __getitem__(self, name: str) -> np.ndarray:
        info = self._members[name]
        try:
            with self._zip.open(info) as handle:
                _header(handle, info.file_size)
            with self._zip.open(info) as handle:
                return np.lib.format.read_array(handle, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"array {name!r} {exc}") from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:  # a CRC error, a truncated member
            raise ValueError(f"array {name!r} is damaged ({exc}); rewrite the file with numpy.savez.") from None
