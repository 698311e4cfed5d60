"""``torchntk kernel``: the infinite-width NTK or NNGP of a network on a user's data file.

    torchntk kernel data.npy --depth 4 --activation relu --bias-std 0.1 --kind ntk -o K.npy
    torchntk kernel train.csv test.csv --drop price --kind both -o K.npz
    torchntk kernel images.npy --spec cnn.json -o K.npy            # images (N, C, H, W), any architecture
    torchntk kernel pixels.csv --spec cnn.json --input-shape 1,8,8 -o K.npy

Also home of what the other data commands share: the network options, the conversion of
torchntk's own errors into one-line messages, and the kernel computation in steps of rows with a
progress bar.
"""

from __future__ import annotations

import functools
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import click
import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from .. import _side
from .._finite import MAX_DEPTH
from .._inputs import check_pairwise_output
from .._progress import rich_progress
from ..activations import CLOSED_FORM, QUADRATURE
from ..engine.serial import Serial, mlp
from ..engine.tiles import default_tile
from ..model_io import column_moments
from .data import Table, column_names, read_table, select_features
from .paths import check_output_file
from .side import check_needed, load_side_inputs, refuse_unused, side_input_options

ACTIVATIONS = tuple(sorted([*CLOSED_FORM, *QUADRATURE]))
KINDS = ("nngp", "ntk")
MIN_STEPS = 32
"""The steps a kernel is split into, about: 16 to 64 steps of whole tiles when it has at least 16
tile rows, else ~N/32 rows a step, so that progress moves (`blocked_kernels`)."""
TILE_HELP = ("Block side of the kernel computation, as tile= in Python: bounds temporary memory (default: 512, "
             "smaller for images whose pairs carry a large spatial kernel). The progress bar moves in steps of whole "
             f"tiles (16 or more), or of about 1/{MIN_STEPS} of the rows for a kernel of fewer than 16 tile rows.")


def network_options(command: Callable) -> Callable:
    """--depth, --activation, --bias-std, --weight-std: the network description."""
    options = [
        click.option("--depth", type=click.IntRange(min=1, max=MAX_DEPTH), default=3, show_default=True,
                     help="Number of dense layers (1 = a random affine map; 4 = three hidden layers)."),
        click.option("--activation", type=click.Choice(ACTIVATIONS, case_sensitive=False), default="relu",
                     show_default=True, help="Nonlinearity between the dense layers."),
        click.option("--bias-std", type=click.FloatRange(min=0), default=0.1, show_default=True,
                     help="beta, the scale of the biases."),
        click.option("--weight-std", type=click.FloatRange(min=0), default=1.0, show_default=True,
                     help="sigma_w, the scale of the weights."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


class _Shape(click.ParamType):
    """A per-example shape such as ``1,8,8`` (C,H,W): positive integers separated by commas."""

    name = "C,H,W"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        try:
            shape = tuple(int(p) for p in parts)
        except ValueError:
            self.fail(f"{value!r} is not a shape; give positive integers separated by commas, e.g. 1,8,8.", param, ctx)
        if not shape or any(n < 1 for n in shape):
            self.fail(f"{value!r}: every entry of the shape must be a positive integer, e.g. 1,8,8.", param, ctx)
        return shape


def architecture_options(command: Callable) -> Callable:
    """--spec FILE.json and --input-shape C,H,W: any architecture instead of the dense network."""
    options = [
        click.option("--spec", "spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None,
                     help="A network description as JSON (the data of spec.to_dict(): convolutions, pooling, "
                          "branches, LayerNorm); replaces --depth, --activation, --bias-std and --weight-std."),
        click.option("--input-shape", type=_Shape(), default=None,
                     help="With --spec: reshape each row of a 2-D table (CSV or array) into this per-example "
                          "shape, e.g. 1,8,8 for 64-pixel images. Arrays of images (N, C, H, W) need none."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


_NETWORK_FLAGS = {"depth": "--depth", "activation": "--activation", "bias_std": "--bias-std",
                  "weight_std": "--weight-std"}


def read_spec(path: Path) -> Serial:
    """The network description in a JSON file written from ``spec.to_dict()``; a ValueError naming
    the file (not JSON, too large or deep, an unknown layer or argument) otherwise."""
    from .._json import read_json
    from ..engine.serialize import from_dict

    data = read_json(path)
    try:
        return from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def chosen_spec(spec_file: Path | None, input_shape: tuple[int, ...] | None) -> Serial | None:
    """The --spec description (None without one), after refusing the dense-network options given
    beside it and --input-shape without it."""
    ctx = click.get_current_context()
    if spec_file is None:
        if input_shape is not None:
            raise click.UsageError("--input-shape reshapes rows for an architecture; give --spec FILE.json with it.")
        return None
    given = [flag for name, flag in _NETWORK_FLAGS.items()
             if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE]
    if given:
        raise click.UsageError(f"--spec describes the whole network; leave out {', '.join(given)}.")
    return read_spec(spec_file)


def example_shape(table: Table, input_shape: tuple[int, ...] | None, path: Path,
                  spec: Serial | None = None) -> tuple[int, ...] | None:
    """The per-example shape each row of ``table`` is reshaped to for an architecture: the array's
    own (N, C, H, W) layout, or --input-shape for a 2-D table (None: rows as they are). Flat rows
    for a ``spec`` whose first layer needs positions (a Conv) are refused with the flag to give."""
    shape = table.example_shape
    if input_shape is not None:
        if shape is not None and shape != input_shape:
            raise click.ClickException(f"{path}: the array holds examples of shape {shape}, not --input-shape "
                                       f"{','.join(map(str, input_shape))}; leave --input-shape out for arrays of "
                                       "images.")
        size = int(np.prod(input_shape))
        if table.x.shape[1] != size:
            raise click.ClickException(f"{path}: {table.x.shape[1]} feature column(s) cannot be reshaped to "
                                       f"--input-shape {','.join(map(str, input_shape))} ({size} values per row).")
        shape = input_shape
    if shape is None and spec is not None and not spec.starts_with_dense():
        d = table.x.shape[1]
        raise click.ClickException(f"{path}: each row is a flat vector of {d} values, but the --spec network starts "
                                   f"with a layer that needs images (C, H, W) or sequences (C, L); give "
                                   f"--input-shape {_shape_hint(d)} (channels first, {d} values in all), or save the "
                                   "images as an (N, C, H, W) array.")
    return shape


def _shape_hint(d: int) -> str:
    """A plausible C,H,W for rows of d values: one channel of a square image, or three of a
    square colour image; else the form to fill in."""
    for channels in (1, 3):
        side = round((d / channels) ** 0.5)
        if channels * side * side == d:
            return f"{channels},{side},{side}"
    return "C,H,W"


def user_errors(command: Callable) -> Callable:
    """Show every failure as one ``Error:`` line and exit code 1, never a traceback.

    torchntk's ValueError / TypeError (bad settings or data), RuntimeError (a kernel overflow,
    a busy store), OSError (a file that cannot be read or written, named) and MemoryError get
    their own message; anything else is reported as an unexpected failure (set
    TORCHNTK_TRACEBACK=1 to see the traceback).
    """
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except (ValueError, TypeError, RuntimeError, ArithmeticError) as exc:
            if os.environ.get(TRACEBACK_ENV):
                raise
            raise click.ClickException(_one_line(exc)) from None
        except BrokenPipeError:
            # The reader of standard output left (`torchntk predict ... | head`): nothing is wrong
            # with any file, so no message; the exit status is a shell's for a closed pipe.
            _silence_stdout()
            raise click.exceptions.Exit(141) from None
        except OSError as exc:
            if os.environ.get(TRACEBACK_ENV):
                raise
            name = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{name}{exc.strerror or exc}; check that the path exists and that you may "
                                       "read (inputs) or write (outputs) it.") from None
        except MemoryError:
            raise click.ClickException("out of memory: the kernel matrix does not fit; use fewer rows "
                                       "(an (N, N) float64 matrix takes 8 N^2 bytes).") from None
        except Exception as exc:
            if os.environ.get(TRACEBACK_ENV):
                raise
            raise click.ClickException(f"unexpected failure ({type(exc).__name__}: {_one_line(exc)}); this is a bug "
                                       f"in torchntk: rerun with {TRACEBACK_ENV}=1 for the traceback and report "
                                       "it.") from None
    return wrapper


TRACEBACK_ENV = "TORCHNTK_TRACEBACK"
"""Set to any value to let the command line show Python tracebacks (for debugging torchntk)."""


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that the interpreter's last flush of a closed pipe
    does not print an error of its own at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass   # not a real file descriptor (a test runner's stream): nothing will be flushed to a pipe


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def make_progress(quiet: bool) -> Progress:
    """A progress display on stderr (stdout may carry results); shown only on a terminal, and
    never with ``quiet``."""
    console = Console(stderr=True)
    return rich_progress(console=console, transient=True, disable=quiet or not console.is_terminal)


def blocked_kernels(spec: Serial, x1: torch.Tensor, x2: torch.Tensor | None = None, *,
                    kinds: Sequence[str] = KINDS, tile: int | None = None, min_steps: int = MIN_STEPS,
                    progress: Progress | None = None, description: str = "kernel", side1: dict | None = None,
                    side2: dict | None = None) -> dict[str, torch.Tensor]:
    """The kernels of ``spec`` on (x1, x2) computed in steps of rows, advancing a progress bar.

    x1 (N1, ...) and x2 (N2, ...), or x2 None for x1 against itself. ``tile`` is the block
    side b of `Serial.kernels` (None: its default, 512 or smaller when a pair of inputs carries
    a large spatial kernel). The rows of x1 go in steps of whole tiles, ``b * (T // min_steps)``
    rows for T = ceil(N1 / b) tile rows, when there are at least ``min_steps // 2`` tile rows:
    then every step computes exactly the tiles that one call would, so the result is the same
    to the bit and costs the same. A kernel of fewer tile rows goes in steps of
    ceil(N1 / min_steps) rows, so that the bar moves even when the whole kernel is one tile.
    With x2 None each step computes its rows against themselves (the symmetric path) and
    against the later rows, and mirrors the latter: half the work, and an exactly symmetric
    result. The bar advances by the number of entries each step computes. ``side1`` and
    ``side2``: the side inputs of x1 and x2 by name (`torchntk._side`), (N1, ...) and (N2, ...);
    each step takes the rows of its examples. Returns {kind: (N1, N2) tensor} for kind in
    ``kinds`` ("nngp", "ntk").
    """
    if tile is not None and tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}.")
    if min_steps < 1:
        raise ValueError(f"min_steps must be >= 1, got {min_steps}.")
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {tuple(kinds)}.")
    check_pairwise_output(spec, x1, "the kernel matrix")
    symmetric = x2 is None
    cols = x1 if symmetric else x2
    n1, n2 = x1.shape[0], cols.shape[0]
    out = {kind: torch.empty(n1, n2, dtype=x1.dtype, device=x1.device) for kind in kinds}
    step = _step_rows(spec, x1, tile, min_steps)
    starts = range(0, n1, step)
    sizes = [min(step, n1 - i) * (n2 - i if symmetric else n2) for i in starts]
    task = progress.add_task(description, total=sum(sizes)) if progress is not None else None
    for start, size in zip(starts, sizes, strict=True):
        rows = slice(start, min(start + step, n1))
        if symmetric:
            # The diagonal block goes through the symmetric path (exactly symmetric, half the
            # work); the rest of the block row is computed once and mirrored.
            mine = _side.rows(side1 or {}, rows)
            _fill(out, _block(spec, x1[rows], None, kinds, tile, _side.keywords(mine, None, x1[rows])), rows, rows)
            later = slice(rows.stop, n2)
            if later.start < n2:
                side = _side.keywords(mine, _side.rows(side1 or {}, later), x1[rows], cols[later])
                block = _block(spec, x1[rows], cols[later], kinds, tile, side)
                _fill(out, block, rows, later)
                _fill(out, {k: v.T for k, v in block.items()}, later, rows)
        else:
            side = _side.keywords(_side.rows(side1 or {}, rows), side2, x1[rows], cols)
            _fill(out, _block(spec, x1[rows], cols, kinds, tile, side), rows, slice(0, n2))
        if task is not None:
            progress.advance(task, size)
    return out


def _step_rows(spec: Serial, x1: torch.Tensor, tile: int | None, min_steps: int) -> int:
    """Rows per step of `blocked_kernels`: whole tiles of `Serial.kernels` when there are enough
    of them (the same tiles as one call, so no extra cost), else ceil(N1 / min_steps)."""
    n1 = x1.shape[0]
    side = tile if tile is not None else default_tile(tuple(x1.shape[2:]), bool(spec.need(False)),
                                                      x1.element_size())
    tile_rows = -(-n1 // side)
    if tile_rows >= max(1, min_steps // 2):
        return side * max(1, tile_rows // min_steps)
    return max(1, -(-n1 // min_steps))


def _block(spec: Serial, x1: torch.Tensor, x2: torch.Tensor | None, kinds: Sequence[str],
           tile: int | None, side: dict) -> dict[str, torch.Tensor]:
    if "ntk" in kinds:
        nngp, ntk = spec.kernels(x1, x2, dtype=x1.dtype, tile=tile, **side)
        return {"nngp": nngp, "ntk": ntk}
    return {"nngp": spec.nngp(x1, x2, dtype=x1.dtype, tile=tile, **side)}


def _fill(out: dict[str, torch.Tensor], blocks: dict[str, torch.Tensor], rows: slice, cols: slice) -> None:
    for kind, matrix in out.items():
        matrix[rows, cols] = blocks[kind]


def load_table(path: Path, *, array: str | None, drop: Sequence[str], lenient: bool = False) -> Table:
    """The features of a data file (the ``drop`` columns removed), with their column names.

    ``lenient``: a CSV may lack some of the ``drop`` columns (a test file without the target);
    the caller checks that each one named exists somewhere."""
    if lenient and path.suffix.lower() == ".csv":
        names = column_names(path)
        drop = [name for name in drop if name in names]
    return read_table(path, target=drop, array=array)


def load_matrix(path: Path, *, array: str | None, drop: Sequence[str]) -> np.ndarray:
    """The features of a data file (the ``drop`` columns removed)."""
    return load_table(path, array=array, drop=drop).x


def standardize_columns(x1: np.ndarray, x2: np.ndarray | None,
                        names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Columns centred and scaled by x1's mean and standard deviation (constant columns: scale 1);
    a column whose mean or standard deviation overflows is refused (`column_moments`)."""
    mean, scale = column_moments(x1, True, names)
    return (x1 - mean) / scale, None if x2 is None else (x2 - mean) / scale


def write_kernels(path: Path, kernels: dict[str, np.ndarray]) -> None:
    """.npy or .csv for one matrix; .npz with one array per kind. The suffix is compared
    case-insensitively and the file written under exactly the given name (numpy's savers
    would append ".npy" to "K.NPY")."""
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz", ".csv"):
        raise click.UsageError(f"output {path.name!r}: use a .npy, .npz or .csv file name.")
    if suffix != ".npz" and len(kernels) > 1:
        raise click.UsageError(f"--kind both writes two matrices: give an .npz output, not {path.name!r}.")
    with open(path, "wb") as handle:
        if suffix == ".npz":
            np.savez(handle, **kernels)
        elif suffix == ".npy":
            np.save(handle, next(iter(kernels.values())))
        else:
            np.savetxt(handle, next(iter(kernels.values())), delimiter=",", fmt="%.17g")


def _matching_columns(table1: Table, table2: Table, data: Path, data2: Path) -> np.ndarray:
    """DATA2's features in DATA's column order: by header name when both files have names (the
    same set of columns is required, in any order), by position otherwise."""
    if table1.named and table2.named:
        return select_features(table2, table1.feature_names, (), data2, against=f"{data.name}'s")
    if table2.x.shape[1] != table1.x.shape[1]:
        raise click.ClickException(f"{data} has {table1.x.shape[1]} feature columns but {data2} has "
                                   f"{table2.x.shape[1]}; both need the same columns.")
    return table2.x


@click.command()
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("data2", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@network_options
@click.option("--kind", type=click.Choice(["ntk", "nngp", "both"]), default="ntk", show_default=True,
              help="Theta(L) (the NTK), Sigma(L) (the NNGP kernel), or both (into an .npz).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Where to write the kernel: .npy, .csv, or .npz (arrays 'nngp' and 'ntk').")
@click.option("--array", default=None, help="In an .npz input, the name of the features array.")
@click.option("--drop", multiple=True, help="A column to leave out (e.g. the target); repeat for more.")
@click.option("--standardize/--no-standardize", default=True, show_default=True,
              help="Centre and scale each feature column by DATA's mean and std first, as `torchntk fit` does, so "
                   "that the kernel is the one a model fitted on DATA uses.")
@click.option("--float32", "single", is_flag=True, help="Compute in float32 (half the memory, ~1e-6 relative).")
@click.option("--tile", type=click.IntRange(min=1), default=None,
              help=TILE_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@architecture_options
@side_input_options(second=True)
@user_errors
def kernel(data: Path, data2: Path | None, depth: int, activation: str, bias_std: float, weight_std: float,
           kind: str, output: Path, array: str | None, drop: tuple[str, ...], standardize: bool, single: bool,
           tile: int | None, quiet: bool, spec_file: Path | None, input_shape: tuple[int, ...] | None,
           side_files: dict[str, Path], side_files2: dict[str, Path]) -> None:
    """Compute the infinite-width kernel K(DATA, DATA), or K(DATA, DATA2).

    DATA and DATA2 are .npy, .npz or .csv files (CSV: a header row, numeric columns only), one
    row per data point; an array may also hold images (N, C, H, W) (or (N, C, L), (N, C, D, H,
    W)). The kernels follow the NTK parameterisation of Jacot et al. (2018): K[i, j] =
    k(x_i, x_j) for the fully-connected network described by the options (which sees images
    flattened), or for the architecture of --spec FILE.json. A --spec network with Aggregate
    reads each graph's adjacency (--adjacency, and --adjacency2 for DATA2); padded inputs take
    a mask of their real positions (--mask, --mask2).
    """
    check_output_file(output, (".npy", ".npz", ".csv"))
    if kind == "both" and output.suffix.lower() != ".npz":
        raise click.UsageError(f"--kind both writes two matrices: give an .npz output, not {output.name!r}.")
    spec = chosen_spec(spec_file, input_shape)
    check_needed(spec, side_files, dense=spec is None)
    if data2 is None:
        refuse_unused(side_files2, "is for DATA2, the second data file; give DATA2 or leave it out.")
    else:
        check_needed(spec, side_files2, suffix="2", what="DATA2", dense=spec is None)
    if spec is None:
        spec = mlp(depth, activation.lower(), bias_std=bias_std, weight_std=weight_std)
    lenient = data2 is not None  # `kernel train.csv test.csv --drop price`: test.csv may lack price
    table1 = load_table(data, array=array, drop=drop, lenient=lenient)
    shape = example_shape(table1, input_shape, data, spec) if spec_file is not None else None
    x1, x2 = table1.x, None
    if data2 is not None:
        table2 = load_table(data2, array=array, drop=drop, lenient=lenient)
        unknown = [name for name in drop if name not in (*table1.target_names, *table2.target_names)]
        if unknown:
            raise click.UsageError(f"--drop {unknown[0]!r}: neither {data.name} nor {data2.name} has a column of that "
                                   "name.")
        x2 = _matching_columns(table1, table2, data, data2)
        if spec_file is not None and example_shape(table2, input_shape, data2, spec) != shape:
            raise click.ClickException(f"{data2} holds examples of shape {table2.example_shape} but {data} of shape "
                                       f"{shape}; both need the same shape.")
    side1 = load_side_inputs(side_files, x1.shape[0], shape, data)
    side2 = {} if data2 is None else load_side_inputs(side_files2, x2.shape[0], shape, data2, suffix="2")
    if standardize:
        x1, x2 = standardize_columns(x1, x2, table1.feature_names)
    dtype = torch.float32 if single else torch.float64
    kinds = KINDS if kind == "both" else (kind,)
    t1 = torch.from_numpy(x1).to(dtype)
    t2 = None if x2 is None else torch.from_numpy(x2).to(dtype)
    if shape is not None:  # rows back to images for the architecture (standardised pixel by pixel above)
        t1 = t1.reshape(t1.shape[0], *shape)
        t2 = None if t2 is None else t2.reshape(t2.shape[0], *shape)
    with make_progress(quiet) as progress:
        n2 = (t2 if t2 is not None else t1).shape[0]
        result = blocked_kernels(spec, t1, t2, kinds=kinds, tile=tile, progress=progress,
                                 description=f"{'+'.join(kinds)} {t1.shape[0]}x{n2}",
                                 side1=_tensors(side1), side2=None if t2 is None else _tensors(side2))
    write_kernels(output, {k: v.numpy() for k, v in result.items()})
    if not quiet:
        size = tuple(next(iter(result.values())).shape)
        inputs = describe_inputs(table1, shape or table1.example_shape)
        click.echo(f"wrote {'+'.join(kinds)} {size} to {output}; inputs: {inputs}"
                   f"{', standardised' if standardize else ''}", err=True)


def _tensors(side: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(a) for name, a in side.items()}


def describe_inputs(table: Table, shape: tuple[int, ...] | None) -> str:
    """What the network sees, for a summary line: "60 rows of 4 feature columns: a, b, c, price"
    (names of a CSV shown, so that a forgotten --drop is plain), or "300 images of shape 1x8x8"."""
    n = table.x.shape[0]
    if shape is not None:
        return f"{n} {'images' if len(shape) == 3 else 'examples'} of shape {'x'.join(map(str, shape))}"
    d = table.x.shape[1]
    if not table.named:
        return f"{n} rows of {d} feature column{'s' if d != 1 else ''}"
    names = list(table.feature_names)
    shown = ", ".join(names[:12]) + (f", ... ({d} in all)" if d > 12 else "")
    return f"{n} rows of {d} feature column{'s' if d != 1 else ''}: {shown}"

