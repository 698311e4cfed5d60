"""One JSON reader for the files torchntk reads back (model.json, kernel-store manifests), with
limits: a bounded size and nesting depth (no RecursionError on a hostile file), duplicate keys
refused (the standard library would silently keep the last one), and no NaN or Infinity
(strict JSON). Every problem is one ValueError that names the file."""

from __future__ import annotations

import json
import os
from typing import Any

MAX_BYTES = 64 * 2**20
"""Largest JSON document read (64 MiB: room for a million feature names)."""

MAX_NESTING = 64
"""Deepest nesting of objects and lists accepted. A description adds two per serial / parallel
level (an object and its list) to the few of the file around it, so its deepest, 24 levels
(torchntk.engine.base.MAX_NESTING), nests about 56 deep in a store manifest or a model file."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name} (NaN and Infinity are not JSON)")


def _nesting(text: str) -> int:
    """The deepest nesting of [ and { outside strings, vectorised (a hostile file may hold
    millions of brackets): string contents are dropped first, then the running count of
    openings minus closings is a cumulative sum."""
    import numpy as np

    # Escaped backslashes, then escaped quotes, cannot end a string; what is left splits on quotes
    # into pieces alternately outside and inside strings.
    outside = "".join(text.replace("\\\\", "").replace('\\"', "").split('"')[::2])
    codes = np.frombuffer(outside.encode("utf-8"), dtype=np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max()) if steps.size else 0


def parse_json(text: str | bytes, where: str, *, max_bytes: int = MAX_BYTES,
               max_nesting: int = MAX_NESTING) -> Any:
    """The JSON value in ``text``, or a ValueError naming ``where`` and the problem."""
    if len(text) > max_bytes:
        raise ValueError(f"{where} is {len(text):,} bytes, more than the {max_bytes:,} a torchntk JSON file may "
                         "hold; it was not written by torchntk.")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{where} is not valid JSON (not UTF-8 text: {exc.reason}).") from None
    nesting = _nesting(text)
    if nesting > max_nesting:
        raise ValueError(f"{where} nests objects or lists {nesting} deep, more than the {max_nesting} a torchntk "
                         "JSON file may; it was not written by torchntk.")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"{where} nests too deeply to read; it was not written by torchntk.") from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError, as are ours above
        raise ValueError(f"{where} is not valid JSON ({exc}).") from None


def read_json(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES, max_nesting: int = MAX_NESTING) -> Any:
    """The JSON value in the file at ``path`` (size checked before reading), or a ValueError.
    OSError (a missing or unreadable file) passes through, naming the file."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise ValueError(f"{os.fspath(path)} is {size:,} bytes, more than the {max_bytes:,} a torchntk JSON "
                             "file may hold; it was not written by torchntk.")
        data = handle.read(max_bytes + 1)
    return parse_json(data, os.fspath(path), max_bytes=max_bytes, max_nesting=max_nesting)
