"""A fitted model's files (see the package doc): ``model.json`` and ``arrays.npz``, written whole by
`save_model` and read back by `read_model` without pickle, every field validated and the sha256
content fingerprint that ties the two files together verified.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._json import read_json
from .._npyfile import NpzArchive
from .._outputs import check_replaceable
from .._side import problems
from .settings import ModelSettings, migrate_settings

FORMAT = "torchntk.kernel-model"
VERSION = 5
"""5: model.json lists under "side_inputs" the side inputs the model was fitted with (adjacency,
mask; `torchntk._side`), each stored in arrays.npz as ``<name>_train`` and covered by the fingerprint.
4 (read; no "side_inputs": none): model.json records the class labels of a classifier under
"classes" (null for a regression).
3 (read; no "classes": a regression): the settings hold the network as its description's
``to_dict()`` data, whatever the network.
2 (read, and migrated in memory): a fully-connected network as depth / activation / scale fields.
Since 2, model.json records a sha256 content fingerprint of itself and the arrays (verified at load)."""
_JSON, _ARRAYS = "model.json", "arrays.npz"
ARRAY_NAMES = ("x_train", "y_train", "x_mean", "x_scale", "y_mean", "y_scale", "eigenvalues", "eigenvectors",
               "nngp_train")
"""The arrays of arrays.npz, in the order the fingerprint takes them."""

_META_KEYS = frozenset({"format", "version", "written_by", "settings", "feature_names", "target_names", "n_train",
                        "classes", "side_inputs", "sha256"})
_ADDED_IN = {"classes": 4, "side_inputs": 5}
"""Keys of model.json that files of older versions lack."""


def side_array(name: str) -> str:
    """The name in arrays.npz of the training inputs' side input ``name``: "adjacency_train"."""
    return f"{name}_train"


def _array_names(meta: dict) -> list[str]:
    """The arrays a model file holds, in the fingerprint's order: `ARRAY_NAMES`, then the
    side inputs that model.json lists (none before version 5)."""
    side = meta.get("side_inputs") or []
    return [*ARRAY_NAMES, *(side_array(name) for name in side)]


def content_fingerprint(meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """sha256 over model.json's content without its "sha256" field (canonical JSON: sorted keys,
    no spaces) and over each array's name, dtype, shape and bytes, in a fixed order (the side
    inputs' arrays after the others)."""
    digest = hashlib.sha256()
    canonical = {k: v for k, v in meta.items() if k != "sha256"}
    digest.update(json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())
    for name in _array_names(meta):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def check_save_target(directory: str | Path) -> Path:
    """``directory`` as a Path if a model may be saved there: absent, empty, or holding a torchntk
    model (replaced). Anything else is refused with a ValueError, so that saving never mixes
    into or overwrites another program's files (a foreign model.json included)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file; a model is saved as a directory (give a new folder name).")
    if directory.is_dir() and any(directory.iterdir()):
        if not (directory / _JSON).is_file():
            raise ValueError(f"{directory} is a non-empty directory that is not a torchntk model; "
                             "choose a new or empty folder.")
        try:
            check_replaceable(directory, [_JSON], ours=_is_model_json)
        except ValueError as exc:
            raise ValueError(f"not a torchntk model: {exc}") from None
    return directory


def _is_model_json(path: Path) -> bool:
    """Whether ``path`` is the model.json of a torchntk model (its format field says so)."""
    try:
        meta = read_json(path)
    except (ValueError, OSError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def save_model(directory: str | Path, settings: ModelSettings, arrays: dict[str, np.ndarray],
               feature_names: Sequence[str], target_names: Sequence[str], classes: Sequence[Any] | None = None,
               side_inputs: dict[str, np.ndarray] | None = None) -> Path:
    """Write a model's ``model.json`` and ``arrays.npz`` (the arrays of `ARRAY_NAMES`, and each
    of ``side_inputs``, the training inputs' side inputs by name, as ``<name>_train``) into
    ``directory``, created if needed, and return it; `check_save_target` decides whether it may.
    ``classes``: a classifier's labels (ints or strings, one per column of y_train), or None."""
    directory = check_save_target(directory)
    directory.mkdir(parents=True, exist_ok=True)
    from .. import __version__
    from .._side import NAMES

    side = {name: np.asarray(side_inputs[name]) for name in NAMES if name in (side_inputs or {})}
    arrays = {name: np.asarray(arrays[name]) for name in ARRAY_NAMES}
    arrays.update({side_array(name): a for name, a in side.items()})
    meta = {"format": FORMAT, "version": VERSION, "written_by": f"torchntk {__version__}",
            "settings": settings.to_json(), "feature_names": list(feature_names),
            "target_names": list(target_names), "n_train": int(arrays["x_train"].shape[0]),
            "classes": None if classes is None else [_json_label(c) for c in classes],
            "side_inputs": list(side)}
    meta["sha256"] = content_fingerprint(meta, arrays)
    # Each file is written whole to a temporary name and renamed: a failed save never leaves
    # half a file, and the fingerprint ties the two together.
    _replace(directory / _ARRAYS, lambda handle: np.savez(handle, **arrays))
    text = json.dumps(meta, indent=2, allow_nan=False) + "\n"
    _replace(directory / _JSON, lambda handle: handle.write(text.encode("utf-8")))
    return directory


def read_model(directory: str | Path) -> tuple[ModelSettings, dict[str, np.ndarray], list[str], list[str],
                                               list | None, dict[str, np.ndarray]]:
    """(settings, arrays, feature names, target names, classes or None, the training inputs'
    side inputs by name) of the model written by `save_model` in ``directory`` (or at its
    model.json), each validated and the fingerprint verified; a ValueError says why it is not one."""
    directory = Path(directory)
    if directory.is_file() and directory.name == _JSON:
        directory = directory.parent
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a torchntk model directory (a folder written by "
                         "`torchntk fit -o DIR` or KernelModel.save).")
    meta = _read_meta(directory)
    where = directory / _JSON
    keys = {key for key in _META_KEYS if _ADDED_IN.get(key, 0) <= meta["version"]}
    if set(meta) != keys:
        raise ValueError(f"{where} has keys {sorted(meta)}; a version-{meta['version']} torchntk model has "
                         f"{sorted(keys)}. The file was edited or not written by torchntk.")
    classes = _check_classes(meta.get("classes"), meta["target_names"], where)
    side_names = _check_side_names(meta.get("side_inputs", []), where)
    raw = meta["settings"]
    if meta["version"] < 3:  # the settings took their present form in version 3
        raw = migrate_settings(raw, meta["version"], lambda why: ValueError(
            f"{where} is a version-{meta['version']} model file but {why}; refit the model with `torchntk fit`."))
    try:
        settings = ModelSettings.from_json(raw)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    names = {key: meta[key] for key in ("feature_names", "target_names")}
    for key, value in names.items():
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: {key} must be a non-empty list of strings.")
        if len(set(value)) != len(value):
            raise ValueError(f"{where}: {key} holds a name twice.")
    if not isinstance(meta["written_by"], str) or not isinstance(meta["sha256"], str):
        raise ValueError(f"{where}: written_by and sha256 must be strings.")
    n_train = meta["n_train"]
    if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
        raise ValueError(f"{where}: n_train must be a positive integer, got {n_train!r}.")
    arrays = _read_arrays(directory, len(names["feature_names"]),
                          len(names["target_names"]) if classes is None else len(classes), side_names)
    if arrays["x_train"].shape[0] != n_train:
        raise ValueError(f"{where} says n_train = {n_train} but {_ARRAYS} holds {arrays['x_train'].shape[0]} "
                         "training rows; the model's files are inconsistent (refit it).")
    expected = content_fingerprint(meta, arrays)
    if meta["sha256"] != expected:
        raise ValueError(f"{directory}: the model's content fingerprint does not match its files (model.json "
                         "or arrays.npz was changed after saving, or they come from two different models); "
                         "refit the model with `torchntk fit` or KernelModel.fit.")
    missing, unread = problems(settings.spec(), side_names)
    if missing or unread:
        what = (f"its network reads {missing} but the file stores none" if missing
                else f"it stores {unread}, which no layer of its network reads")
        raise ValueError(f"{where}: the model's side inputs do not fit its network ({what}). The file was edited or "
                         "not written by torchntk.")
    side = {name: arrays.pop(side_array(name)) for name in side_names}
    return settings, arrays, names["feature_names"], names["target_names"], classes, side


def _check_side_names(names: Any, where: Path) -> list[str]:
    """model.json's "side_inputs": a list of distinct known side-input names, in the registry's order."""
    from .._side import NAMES

    if (not isinstance(names, list) or not all(isinstance(n, str) for n in names)
            or names != [n for n in NAMES if n in names]):
        raise ValueError(f"{where}: side_inputs must be a list of distinct names among {list(NAMES)}, in that order; "
                         f"got {names!r}. The file was edited or not written by torchntk.")
    return names


def _json_label(label: Any) -> int | str:
    """A class label as model.json holds it: a Python int or str."""
    if isinstance(label, (str, np.str_)):
        return str(label)
    return int(label)


def _check_classes(classes: Any, target_names: Any, where: Path) -> list | None:
    """model.json's "classes": null, or at least two distinct labels, all ints or all strings,
    sorted, of the one target column."""
    if classes is None:
        return None
    ints = isinstance(classes, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
    strings = isinstance(classes, list) and all(isinstance(c, str) for c in classes)
    if not (ints or strings) or len(classes) < 2 or len(set(classes)) != len(classes) or classes != sorted(classes):
        raise ValueError(f"{where}: classes must be null or a sorted list of at least two distinct class labels, "
                         "all integers or all strings. The file was edited or not written by torchntk.")
    if not isinstance(target_names, list) or len(target_names) != 1:
        raise ValueError(f"{where}: a classifier has one target column (its labels); target_names is "
                         f"{target_names!r}.")
    return classes


def _read_meta(directory: Path) -> dict:
    path = directory / _JSON
    if not path.is_file():
        raise ValueError(f"{directory} is not a torchntk model: it has no {_JSON}.")
    try:
        meta = read_json(path)
    except ValueError as exc:
        raise ValueError(f"{exc} It is not a torchntk model file.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a torchntk model file (format tag {FORMAT!r} missing).")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: invalid format version {version!r}.")
    if version > VERSION:
        raise ValueError(f"{path} has format version {version}, newer than this torchntk reads ({VERSION}); "
                         "upgrade torchntk.")
    if version < 2:
        raise ValueError(f"{path} has format version {version}, written by an older torchntk without a content "
                         "fingerprint; refit the model with this version (`torchntk fit`).")
    return meta


def _read_arrays(directory: Path, d: int, k: int, side_names: Sequence[str] = ()) -> dict[str, np.ndarray]:
    path = directory / _ARRAYS
    if not path.is_file():
        raise ValueError(f"{directory} is an incomplete torchntk model: {_ARRAYS} is missing.")
    wanted = [*ARRAY_NAMES, *(side_array(name) for name in side_names)]
    try:
        with NpzArchive(path) as archive:
            unknown = sorted(set(archive.files) - set(wanted))
            missing = [name for name in wanted if name not in archive.files]
            if missing or unknown:
                what = f"lacks array(s) {missing}" if missing else f"holds unknown array(s) {unknown}"
                raise ValueError(f"{what}; it was not written by torchntk")
            arrays = {name: archive[name] for name in wanted}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ValueError(f"{path}: {exc} (arrays that cannot be read without pickle: it was not written by "
                             "torchntk).") from None
        raise ValueError(f"{path}: {exc}.") from None
    n = arrays["eigenvalues"].shape[0] if arrays["eigenvalues"].ndim == 1 else -1
    expected = {"x_train": (n, d), "y_train": (n, k), "x_mean": (d,), "x_scale": (d,), "y_mean": (k,),
                "y_scale": (k,), "eigenvalues": (n,), "eigenvectors": (n, n), "nngp_train": (n, n)}
    for name, shape in expected.items():
        a = arrays[name]
        if a.dtype != np.float64 or a.shape != shape:
            raise ValueError(f"{path}: array {name!r} has shape {a.shape} and dtype {a.dtype}; expected {shape} "
                             "float64. The model files are inconsistent.")
        if not np.isfinite(a).all():
            raise ValueError(f"{path}: array {name!r} holds NaN or infinite values; the model is damaged (refit it).")
    for name in ("x_scale", "y_scale"):
        if not (arrays[name] > 0).all():
            raise ValueError(f"{path}: array {name!r} holds a scale <= 0; scales are standard deviations (> 0). "
                             "The model is damaged (refit it).")
    for name in map(side_array, side_names):
        a = arrays[name]
        if a.dtype not in (np.float64, np.int64, np.bool_) or a.ndim < 2 or a.shape[0] != n:
            raise ValueError(f"{path}: array {name!r} has shape {a.shape} and dtype {a.dtype}; expected ({n}, ...) "
                             "float64, int64 or bool, one row per training input. The model files are inconsistent.")
        if a.dtype == np.float64 and not np.isfinite(a).all():
            raise ValueError(f"{path}: array {name!r} holds NaN or infinite values; the model is damaged (refit it).")
    return arrays


def _replace(path: Path, write: Callable[[Any], Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
