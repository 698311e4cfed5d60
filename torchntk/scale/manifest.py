"""What a kernel store holds, written down so a resumed run can prove it computes the same thing.

The manifest is a small JSON-able dict: the network description (its ``spec.to_dict()``
document, as model files and `torchntk.from_dict` use it), the kernel kind(s), the storage dtype, the tile side,
the matrix shape, and sha256 fingerprints of the inputs x and x2 (their bytes in the compute
dtype) and, when the call has side inputs (adjacency, mask), of each of those as given under
"side" (absent without any, so stores written before side inputs existed still resume). A
second run on the same store compares its own manifest with the stored one and refuses to mix
anything that differs.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

FORMAT = "torchntk-kernel-store/3"
"""Version of the on-disk layout; bumped when the layout changes incompatibly (3: the manifest's
"spec" is the description's ``to_dict()`` document; 2: completion markers hold each chunk's
sha256). Stores of other layouts are refused, with their layout named."""

KINDS = {"ntk": ("ntk",), "nngp": ("nngp",), "both": ("nngp", "ntk")}
"""The arrays each ``kind`` argument stores (kind="both" stores two, as spec.kernels returns)."""


def describe_spec(spec: Any) -> dict[str, Any]:
    """The network description as its plain data, ``spec.to_dict()``, with a user's activation
    callable recorded by name (and a warning that edits to its code go unnoticed)."""
    try:
        return spec.to_dict(name_callables=True)
    except (ValueError, AttributeError) as exc:
        raise TypeError(f"cannot describe {spec!r} for a kernel store: {exc}") from None


def fingerprint(x: Tensor) -> str:
    """sha256 of the shape, dtype and bytes of ``x`` (as laid out in row-major order on the CPU)."""
    digest = hashlib.sha256()
    digest.update(f"{tuple(x.shape)}|{x.dtype}|".encode())
    digest.update(x.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def dtype_name(dtype: torch.dtype) -> str:
    """The dtype's name as a manifest stores it (and numpy reads it): torch.float32 -> "float32"."""
    return str(dtype).removeprefix("torch.")


def build_manifest(spec: Any, x1: Tensor, x2: Tensor | None, kind: str, tile: int,
                   dtype: torch.dtype, side1: dict[str, Tensor] | None = None,
                   side2: dict[str, Tensor] | None = None) -> dict[str, Any]:
    """The manifest a run with these arguments writes (or must find) in its store; ``side1`` and
    ``side2`` are the side inputs of x1 and x2 by name (none: no "side" field)."""
    n2 = x1.shape[0] if x2 is None else x2.shape[0]
    manifest = {
        "format": FORMAT,
        "kind": kind,
        "arrays": list(KINDS[kind]),
        "spec": describe_spec(spec),
        "dtype": dtype_name(dtype),
        "tile": tile,
        "shape": [x1.shape[0], n2],
        "symmetric": x2 is None,
        "x": fingerprint(x1),
        "x2": None if x2 is None else fingerprint(x2),
    }
    names = {**(side1 or {}), **(side2 or {})}
    if names:
        manifest["side"] = {name: [fingerprint(s[name]) if name in s else None for s in (side1 or {}, side2 or {})]
                            for name in sorted(names)}
    return manifest


_WHAT = {
    "format": "the store layout version", "kind": "the kernel kind", "arrays": "the stored arrays",
    "spec": "the network description", "dtype": "the dtype", "tile": "the tile size",
    "shape": "the matrix shape", "symmetric": "whether x2 is None", "x": "the data x (sha256)",
    "x2": "the data x2 (sha256)", "side": "the side inputs (sha256 of x's and x2's, by name)",
}


def _short(value: Any) -> str:
    """A fingerprint shortened to 16 hex digits (enough to tell two apart in a message), also
    inside the side inputs' map of fingerprints."""
    return repr(_shortened(value))


def _shortened(value: Any) -> Any:
    if isinstance(value, str) and len(value) == 64:
        return value[:16] + "..."
    if isinstance(value, dict):
        return {k: _shortened(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shortened(v) for v in value]
    return value


_FIELDS = {"format": str, "kind": str, "arrays": list, "spec": dict, "dtype": str, "tile": int, "shape": list,
           "symmetric": bool, "x": str, "x2": (str, type(None))}


def validate_manifest(manifest: dict[str, Any], path: str) -> None:
    """Raise ValueError unless ``manifest`` has every field, each of the right type and range."""
    def damaged(what: str) -> ValueError:
        return ValueError(f"the manifest of the kernel store {path!r} {what}: the store is damaged or was edited; "
                          "delete it and recompute it.")

    missing = [key for key in _FIELDS if key not in manifest]
    if missing:
        raise damaged(f"lacks the field(s) {missing}")
    for key, kind in _FIELDS.items():
        value = manifest[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise damaged(f"has {key} = {value!r} of type {type(value).__name__}")
    if manifest["kind"] not in KINDS or manifest["arrays"] != list(KINDS[manifest["kind"]]):
        raise damaged(f"has kind {manifest['kind']!r} with arrays {manifest['arrays']!r}")
    if manifest["dtype"] not in ("float32", "float64"):
        raise damaged(f"has dtype {manifest['dtype']!r} (float32 or float64 expected)")
    shape = manifest["shape"]
    if (len(shape) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)
            or manifest["tile"] < 1 or (manifest["symmetric"] and shape[0] != shape[1])):
        raise damaged(f"has shape {shape!r}, tile {manifest['tile']!r}, symmetric {manifest['symmetric']!r}")
    side = manifest.get("side")
    if "side" in manifest and not (isinstance(side, dict) and side and all(
            isinstance(name, str) and isinstance(pair, list) and len(pair) == 2
            and all(isinstance(p, (str, type(None))) for p in pair) for name, pair in side.items())):
        raise damaged(f"has side = {side!r} (a map of side-input names to two fingerprints or null expected)")


def differences(stored: dict[str, Any], wanted: dict[str, Any], keys: Any = None,
                sides: tuple[str, str] = ("store has", "this call has")) -> list[str]:
    """One line per field of ``keys`` (default: every manifest field) where the two manifests
    differ, e.g. "the data x (sha256): store has '1f0c...', this call has '9ab2...'"; ``sides``
    names the two."""
    return [f"{_WHAT.get(key, key)}: {sides[0]} {_short(stored.get(key))}, {sides[1]} {_short(wanted.get(key))}"
            for key in (_WHAT if keys is None else keys) if stored.get(key) != wanted.get(key)]


def check_same(stored: dict[str, Any], wanted: dict[str, Any], path: str) -> None:
    """Raise ValueError naming every field where a store's manifest differs from this run's."""
    diffs = differences(stored, wanted)
    if diffs:
        raise ValueError(f"the kernel store {path!r} was made by a different computation, so it cannot be "
                         "resumed or reused (its tiles would be mixed with different ones):\n  - "
                         + "\n  - ".join(diffs)
                         + "\nUse another store path, or delete this one to start over.")
