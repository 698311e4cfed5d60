"""Finished parts of an experiment kept on disk, so that an interrupted run continues where it stopped.

Each part (one trained network's measurements) is one .npz file holding its arrays and a key: the
sha256 of everything that determines it (the experiment's settings, the seed, the library version
and the data). A part whose key differs, or whose file is torn, is computed again, never read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np


class PieceStore:
    """Parts of one experiment in ``folder`` (None: keep nothing, compute everything).

    Args:
        folder: where the parts live (created if missing), or None.
        determines: JSON-able description of what determines the parts (settings, seed...).
        data: arrays the parts were computed from (hashed into the key).
    """

    def __init__(self, folder: str | Path | None, determines: dict[str, Any],
                 data: tuple[np.ndarray, ...] = ()) -> None:
        from .. import __version__

        self.folder = None if folder is None else Path(folder)
        digest = hashlib.sha256()
        digest.update(json.dumps({**determines, "torchntk": __version__}, sort_keys=True, default=str).encode())
        for array in data:
            digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
        self.key = digest.hexdigest()
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.npz"

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays of part ``name``, or None when it is missing, torn or from other settings."""
        if self.folder is None or not self._path(name).exists():
            return None
        try:
            with np.load(self._path(name), allow_pickle=False) as saved:
                if str(saved["key"]) != self.key:
                    return None
                return {field: saved[field] for field in saved.files if field != "key"}
        except (OSError, ValueError, KeyError):  # a torn or foreign file: compute the part again
            return None

    def save(self, name: str, **arrays: np.ndarray) -> None:
        """Keep part ``name``; written to a temporary file and renamed, so a crash never leaves one that loads."""
        if self.folder is None:
            return
        path = self._path(name)
        partial = path.with_name(path.name + ".partial.npz")
        np.savez(partial, key=np.array(self.key), **arrays)
        os.replace(partial, path)
