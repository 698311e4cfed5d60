"""Side inputs on the command line: ``--adjacency FILE.npy`` and ``--mask FILE.npy`` (and
``--adjacency2`` / ``--mask2`` for a second data file), one option pair per entry of
`torchntk._side.SIDE_INPUTS`.

    torchntk kernel graphs.npy --spec gnn.json --adjacency A.npy -o K.npy
    torchntk kernel train.npy test.npy --spec gnn.json --adjacency A.npy --adjacency2 A_test.npy -o K.npy
    torchntk kernel padded.npy --spec seq.json --mask lengths_mask.npy -o K.npy

Each file is a .npy array with one row per example of its data file, in the same order, read
without pickle; it is checked (rows, shape, values) by the kernels' own checks before any work,
and every problem is one ``Error:`` line naming the option and the file.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from .. import _side
from .._npyfile import read_npy

_PARAM = "side_input__{}{}"


def side_input_options(*, second: bool) -> Callable:
    """``--<name> FILE.npy`` for each side input (and ``--<name>2`` with ``second``), handed to the
    command as ``side_files`` (name -> Path) and ``side_files2`` (with ``second``)."""
    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs["side_files"] = _collect(kwargs, "")
            if second:
                kwargs["side_files2"] = _collect(kwargs, "2")
            return command(*args, **kwargs)

        for entry in reversed(_side.SIDE_INPUTS):
            suffixes = ("", "2") if second else ("",)
            for suffix in reversed(suffixes):
                whose = "DATA2's examples" if suffix else ("DATA's examples" if second else "the examples")
                need = ("required when the --spec network has a layer that reads it (Aggregate)"
                        if not entry.optional else "optional")
                wrapper = click.option(
                    f"--{entry.name}{suffix}", _PARAM.format(entry.name, suffix),
                    type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                    help=f"With --spec: a .npy file of {entry.holds}, one row for each of {whose}, in order; "
                         f"{need}.")(wrapper)
        return wrapper
    return decorate


def _collect(kwargs: dict, suffix: str) -> dict[str, Path]:
    files = {name: kwargs.pop(_PARAM.format(name, suffix)) for name in _side.NAMES}
    return {name: path for name, path in files.items() if path is not None}


def flag(name: str, suffix: str = "") -> str:
    """The option of side input ``name``: "--adjacency", "--mask2"."""
    return f"--{name}{suffix}"


def check_needed(spec: Any, files: dict[str, Path], *, suffix: str = "", what: str = "DATA",
                 dense: bool = False, network: str = "the --spec network") -> None:
    """Refuse (a usage error) side inputs that the network cannot take: any with the dense network
    (``dense``: no --spec), a required one missing, or one that no layer reads."""
    if dense:
        if files:
            raise click.UsageError(f"{flag(next(iter(files)), suffix)} goes with a --spec network whose inputs have "
                                   "positions (graphs, sequences, images); the dense network reads no side inputs.")
        return
    missing, unread = _side.problems(spec, files)
    if missing:
        name = missing[0]
        raise click.UsageError(f"{network} has a layer that reads {name} (Aggregate): give "
                               f"{flag(name, suffix)} FILE.npy for {what}, {_side.BY_NAME[name].holds}.")
    if unread:
        raise click.UsageError(f"{flag(unread[0], suffix)}: no layer of {network} reads {unread[0]}; leave it out.")


def refuse_unused(files: dict[str, Path], reason: str) -> None:
    """A usage error for side-input files given where nothing takes them (``--mask2`` without DATA2)."""
    if files:
        raise click.UsageError(f"{flag(next(iter(files)), '2')} {reason}")


def load_side_inputs(files: dict[str, Path], count: int, shape: tuple[int, ...] | None, data: Path, *,
                     suffix: str = "") -> dict[str, np.ndarray]:
    """The arrays of ``files`` (name -> .npy path), each with ``count`` rows (those of ``data``)
    and checked by the kernels' own check against the per-example shape ``shape``; one
    ClickException naming the option and the file otherwise."""
    out = {}
    for name, path in files.items():
        option = f"{flag(name, suffix)} {path}"
        if path.suffix.lower() != ".npy":
            raise click.UsageError(f"{option}: give a .npy file (numpy.save), one row per example of {data.name}.")
        try:
            array = read_npy(path)
        except ValueError as exc:
            raise click.ClickException(f"{option}: {exc}") from None
        if array.dtype.kind not in "biuf":
            raise click.ClickException(f"{option}: holds {array.dtype} values; {name} must be numbers or booleans "
                                       f"({_side.BY_NAME[name].holds}).")
        if array.ndim < 2 or array.shape[0] != count:
            rows = f"holds {array.shape[0]} rows" if array.ndim else "is a single number"
            raise click.ClickException(f"{option}: {rows} (shape {array.shape}) but {data} holds {count} examples; "
                                       f"give one row per example, in the same order ({_side.BY_NAME[name].holds}).")
        if shape is None:
            raise click.ClickException(f"{option}: the rows of {data} are flat vectors; {name} needs inputs with "
                                       "positions: save them as an array (N, C, ...) or give --input-shape.")
        try:
            _side.BY_NAME[name].check(array, option, count, shape)
        except (TypeError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        out[name] = array
    return out
