"""Reading users' tables for the command line: .npy, .npz and .csv files of numbers.

Every problem with a file (missing values, a non-numeric column, an unknown target, an empty
file, columns that do not match a fitted model) becomes one `click.ClickException` line that says
what is wrong and how to fix it; the command line shows it without a stack trace.

Columns have names: a CSV's header, or the column's index as a string ("0", "1", ...) for an
array. Targets are chosen by those names (``--target price``; ``--target -1`` for the last
column of an array) or, in an .npz file, by the name of a separate array (``--target y``).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from .._npyfile import NpzArchive, read_npy

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
"""Cell values (case-insensitive, after stripping spaces) read as missing."""

SUFFIXES = (".npy", ".npz", ".csv")


@dataclass(frozen=True)
class Table:
    """Numbers read from a file.

    Attributes:
        x: features of shape (N, d), float64, finite.
        y: targets of shape (N, k), float64, finite; None when no target was asked for.
        feature_names: d column names (a CSV's header; an array's column indices as strings).
        target_names: k names of the targets (empty when ``y`` is None).
        named: True when the names come from a header (CSV), False for arrays.
        example_shape: for an array of images (N, C, H, W) (or (N, C, L), (N, C, D, H, W)),
            the per-example shape (C, ...) of each row of ``x``, which holds the rows flattened
            (d = C * H * W, column names "0", "1", ...); None for a 2-D table.
        labels: when a target is text (a CSV column that is not numeric, or an .npz array of
            strings), the targets as text, shape (N, k), and ``y`` is None: text targets can
            only be class labels. None otherwise.
    """

    x: np.ndarray
    y: np.ndarray | None
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    named: bool
    example_shape: tuple[int, ...] | None = None
    labels: np.ndarray | None = None


def column_names(path: str | Path) -> tuple[str, ...]:
    """The names a target may have in ``path`` without reading its values: a CSV's header, an
    .npz file's array names; () for anything else (or a file that cannot be read: the reader
    that follows says why)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as handle:
                for row in csv.reader(handle):
                    if row and any(cell.strip() for cell in row):
                        return tuple(name.strip() for name in row)
        elif suffix == ".npz":
            with NpzArchive(path) as archive:
                return tuple(archive.files)
    except (OSError, ValueError, UnicodeDecodeError, csv.Error):
        pass
    return ()


def read_table(path: str | Path, *, target: Sequence[str] = (), array: str | None = None) -> Table:
    """Read a .npy, .npz or .csv file into features and (optionally) targets.

    Args:
        path: the file; its suffix picks the reader.
        target: names of the target columns (CSV header names, or column indices of an array,
            negative counting from the end), or in an .npz the name of an array holding them.
        array: in an .npz, the name of the features array (optional when the file holds exactly
            one array besides the targets).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise click.ClickException(f"{path}: unsupported file type {suffix or '(none)'!r}; "
                                   f"use one of {', '.join(SUFFIXES)}.")
    if not path.is_file():
        raise click.ClickException(f"{path}: no such file.")
    if path.stat().st_size == 0:
        raise click.ClickException(f"{path}: the file is empty.")
    if array is not None and suffix != ".npz":
        raise click.ClickException(f"{path}: --array picks an array inside an .npz file; this is a {suffix} file.")
    if suffix == ".csv":
        names, values, cells, text = _read_csv(path, set(target))
        table = _split(path, values, names, target, named=True)
        chosen = [names.index(name) for name in target]
        if text & set(chosen):
            table = Table(table.x, None, table.feature_names, table.target_names, True, labels=cells[:, chosen])
        return table
    if suffix == ".npy":
        data = _load_npy(path)
        if data.ndim > 2:
            if target:
                raise click.ClickException(f"{path}: an array of images {data.shape} has no target columns; save "
                                           "the features and the targets as two arrays of an .npz file and give "
                                           "--target NAME.")
            return _image_table(path, data, None, ())
        return _split(path, data, None, target, named=False)
    return _read_npz(path, target, array)


def select_features(table: Table, feature_names: Sequence[str], target_names: Sequence[str],
                    path: str | Path, against: str = "the model's") -> np.ndarray:
    """The columns of ``table`` that a model fitted on ``feature_names`` needs, in its order.

    By name when both sides have names (a CSV file, or an array whose column indices match the
    fitted ones; target columns present in the file are ignored); by position when the file is
    an array with exactly as many columns as the model has features.
    """
    feature_names, target_names = list(feature_names), set(target_names)
    columns = list(table.feature_names)
    positional = not table.named and len(columns) == len(feature_names)
    if positional:
        return table.x
    index = {name: i for i, name in enumerate(columns)}
    missing = [name for name in feature_names if name not in index]
    extra = [name for name in columns if name not in set(feature_names) and name not in target_names]
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"lacks column(s) {_names(missing)}")
        if extra:
            problems.append(f"has column(s) {_names(extra)} not among {against} columns")
        raise click.ClickException(f"{path}: the columns do not match {against}: the file "
                                   f"{' and '.join(problems)}; {against} {len(feature_names)} "
                                   f"column(s) are {_names(feature_names)}.")
    return table.x[:, [index[name] for name in feature_names]]


# -- CSV ----------------------------------------------------------------------------------

def _read_csv(path: Path, text_ok: set[str] = frozenset()) -> tuple[list[str], np.ndarray, np.ndarray, set[int]]:
    """(header, (N, d) float64 values, (N, d) cells as text, indices of text columns) of a CSV
    file with a header row; only the columns named in ``text_ok`` may hold text (their values
    are then 0)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{path}: not a UTF-8 text file ({exc.reason}); is it really a CSV?") from None
    except csv.Error as exc:
        raise click.ClickException(f"{path}: cannot parse as CSV: {exc}.") from None
    if not rows:
        raise click.ClickException(f"{path}: the file is empty.")
    header = [name.strip() for name in rows[0]]
    _check_header(path, header)
    body = rows[1:]
    if not body:
        raise click.ClickException(f"{path}: the file has a header but no data rows.")
    lengths = np.fromiter((len(row) for row in body), dtype=np.int64, count=len(body))
    ragged = np.flatnonzero(lengths != len(header))
    if ragged.size:
        first = int(ragged[0])
        raise click.ClickException(f"{path}: data row {first + 1} has {lengths[first]} field(s) but the header "
                                   f"has {len(header)}; every row needs one value per column.")
    cells = np.char.strip(np.array(body, dtype=str))
    missing = np.isin(np.char.lower(cells), list(MISSING))
    if missing.any():
        row, col = map(int, np.argwhere(missing)[0])
        raise click.ClickException(f"{path}: missing value in column {header[col]!r} (data row {row + 1}, "
                                   f"{int(missing.sum())} missing in all); impute or drop them first.")
    values = np.empty(cells.shape, dtype=np.float64)
    text: set[int] = set()
    for col, name in enumerate(header):  # columns, not data points
        try:
            values[:, col] = cells[:, col].astype(np.float64)
        except ValueError:
            if name in text_ok:
                values[:, col] = 0.0
                text.add(col)
                continue
            row, cell = _first_non_number(cells[:, col])
            raise click.ClickException(f"{path}: column {name!r} is not numeric (data row {row + 1}: {cell!r}); "
                                       "keep numeric columns only (drop or encode it first).") from None
    _check_finite(path, values, header)
    return header, values, cells, text


def _check_header(path: Path, header: list[str]) -> None:
    if any(not name for name in header):
        position = header.index("")
        raise click.ClickException(f"{path}: header column {position + 1} has no name; the first row must "
                                   "name every column.")
    seen: set[str] = set()
    duplicates = [name for name in header if name in seen or seen.add(name)]
    if duplicates:
        raise click.ClickException(f"{path}: duplicate column name(s) {_names(duplicates)} in the header.")
    numeric = [name for name in header if _is_number(name)]
    if len(numeric) == len(header):
        raise click.ClickException(f"{path}: the first row holds only numbers; a CSV file needs a header row "
                                   "naming the columns (or save the data as .npy).")


def _first_non_number(column: np.ndarray) -> tuple[int, str]:
    # Only on the error path: find the cell to quote in the message.
    for row, cell in enumerate(column):
        if not _is_number(cell):
            return row, str(cell)
    return 0, str(column[0])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- arrays -------------------------------------------------------------------------------

def _load_npy(path: Path) -> np.ndarray:
    try:
        data = read_npy(path)
    except ValueError as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    return _as_matrix(path, data, "the array", images=True)


def _read_npz(path: Path, target: Sequence[str], array: str | None) -> Table:
    try:
        archive = NpzArchive(path)
    except ValueError as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    with archive:
        keys = list(archive.files)
        if not keys:
            raise click.ClickException(f"{path}: the .npz file holds no arrays.")
        target_arrays = [name for name in target if name in keys]
        if target_arrays and len(target_arrays) != len(target):
            raise click.ClickException(f"{path}: give targets either as arrays of the file or as columns, "
                                       f"not both (got {_names(target)}).")
        if array is None:
            candidates = [k for k in keys if k not in target_arrays]
            if len(candidates) != 1:
                raise click.ClickException(f"{path}: the file holds arrays {_names(keys)}; choose the features "
                                           "with --array NAME.")
            array = candidates[0]
        if array not in keys:
            raise click.ClickException(f"{path}: no array named {array!r}; the file holds {_names(keys)}.")
        x = _as_matrix(path, _npz_member(path, archive, array), f"array {array!r}", images=True)
        if x.ndim > 2 and target and not target_arrays:
            raise click.ClickException(f"{path}: array {array!r} holds images {x.shape}, which have no target "
                                       "columns; give the targets as another array of the file (--target NAME).")
        if not target_arrays:
            return _image_table(path, x, None, ()) if x.ndim > 2 else _split(path, x, None, target, named=False)
        raw = [_npz_member(path, archive, name) for name in target_arrays]
        if any(r.dtype.kind in "US" for r in raw):
            return _text_targets(path, x, raw, target_arrays, array)
        ys = [_as_matrix(path, r, f"array {name!r}", column=True) for name, r in zip(target_arrays, raw, strict=True)]
    for name, y in zip(target_arrays, ys, strict=True):
        if y.shape[0] != x.shape[0]:
            raise click.ClickException(f"{path}: target array {name!r} has {y.shape[0]} rows but the features "
                                       f"array {array!r} has {x.shape[0]}.")
    y = np.concatenate(ys, axis=1)
    target_names = tuple(name if b.shape[1] == 1 else f"{name}_{j}"
                         for name, b in zip(target_arrays, ys, strict=True) for j in range(b.shape[1]))
    if x.ndim > 2:
        return _image_table(path, x, y, target_names)
    return Table(x, y, _index_names(x.shape[1]), target_names, named=False)


def _text_targets(path: Path, x: np.ndarray, raw: list[np.ndarray], names: list[str], array: str) -> Table:
    """A table whose .npz targets are text (class labels): one 1-D array of strings each."""
    for name, r in zip(names, raw, strict=True):
        if r.ndim != 1 or r.dtype.kind not in "US":
            raise click.ClickException(f"{path}: target array {name!r} has shape {r.shape} and dtype {r.dtype}; text "
                                       "targets (class labels) need one string per row, shape (N,).")
        if r.shape[0] != x.shape[0]:
            raise click.ClickException(f"{path}: target array {name!r} has {r.shape[0]} rows but the features "
                                       f"array {array!r} has {x.shape[0]}.")
    labels = np.column_stack([r.astype(str) for r in raw])
    if x.ndim > 2:
        table = _image_table(path, x, None, tuple(names))
        return Table(table.x, None, table.feature_names, table.target_names, False, table.example_shape, labels)
    return Table(x, None, _index_names(x.shape[1]), tuple(names), named=False, labels=labels)


def _image_table(path: Path, images: np.ndarray, y: np.ndarray | None, target_names: tuple[str, ...]) -> Table:
    """A table of images (N, C, ...): rows flattened, the per-example shape kept."""
    flat = images.reshape(images.shape[0], -1)
    return Table(flat, y, _index_names(flat.shape[1]), target_names, named=False,
                 example_shape=tuple(int(n) for n in images.shape[1:]))


def _npz_member(path: Path, archive: NpzArchive, name: str) -> np.ndarray:
    try:
        return archive[name]
    except ValueError as exc:
        raise click.ClickException(f"{path}: {exc}") from None


def _as_matrix(path: Path, data: np.ndarray, what: str, column: bool = False, images: bool = False) -> np.ndarray:
    """A finite (N, d) float64 array (with ``images`` also (N, C, L), (N, C, H, W) or
    (N, C, D, H, W)), or one clear error."""
    if data.dtype.kind not in "biuf":
        raise click.ClickException(f"{path}: {what} holds {data.dtype} values; only numbers can be used.")
    if data.ndim == 1 and column:
        data = data[:, None]
    if images and data.ndim in (3, 4, 5):
        if 0 in data.shape:
            raise click.ClickException(f"{path}: {what} is empty (shape {data.shape}).")
        values = data.astype(np.float64)
        flat = values.reshape(values.shape[0], -1)
        _check_finite(path, flat, _index_names(flat.shape[1]))
        return values
    if data.ndim != 2:
        hint = " (for one feature save x.reshape(-1, 1))" if data.ndim == 1 else ""
        also = "; or images (N, C, L), (N, C, H, W), (N, C, D, H, W) for a --spec architecture" if images else ""
        raise click.ClickException(f"{path}: {what} has shape {data.shape}; it must be 2-D, one row per "
                                   f"data point{hint}{also}.")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise click.ClickException(f"{path}: {what} is empty (shape {data.shape}).")
    values = data.astype(np.float64)
    _check_finite(path, values, _index_names(values.shape[1]))
    return values


# -- shared -------------------------------------------------------------------------------

def _split(path: Path, values: np.ndarray, names: list[str] | None, target: Sequence[str], named: bool) -> Table:
    """Split a table's columns into features and the named targets."""
    names = list(names) if names is not None else list(_index_names(values.shape[1]))
    chosen = [_target_column(path, names, name, named) for name in target]
    if len(set(chosen)) != len(chosen):
        raise click.ClickException(f"{path}: the same target column was given twice ({_names(target)}).")
    keep = [i for i in range(len(names)) if i not in set(chosen)]
    if not keep:
        raise click.ClickException(f"{path}: no feature columns are left once the targets are removed.")
    y = values[:, chosen] if chosen else None
    return Table(values[:, keep], y, tuple(names[i] for i in keep), tuple(names[i] for i in chosen), named)


def _target_column(path: Path, names: list[str], name: str, named: bool) -> int:
    if named:
        if name not in names:
            raise click.ClickException(f"{path}: no column named {name!r} to use as target; the columns are "
                                       f"{_names(names)}.")
        return names.index(name)
    try:
        index = int(name)
    except ValueError:
        raise click.ClickException(f"{path}: an array's columns have no names; give the target as a column "
                                   f"index (0 to {len(names) - 1}, or -1 for the last), not {name!r}.") from None
    if not -len(names) <= index < len(names):
        raise click.ClickException(f"{path}: target column {index} is out of range; the array has "
                                   f"{len(names)} columns.")
    return index % len(names)


def _check_finite(path: Path, values: np.ndarray, names: Sequence[str]) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise click.ClickException(f"{path}: {int(bad.sum())} missing (NaN) or infinite value(s), the first in "
                                   f"column {names[col]!r}, data row {row + 1}; impute or drop them first.")


def _index_names(count: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(count))


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(str(n)) for n in list(names)[:12])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
