"""``torchntk fit`` and ``torchntk predict``: an infinitely wide network trained on a user's table.

    torchntk fit train.csv --target price --depth 3 --kernel ntk --time inf -o model/
    torchntk predict model/ test.csv -o predictions.csv
    torchntk fit digits.npz --target y --spec cnn.json -o model/    # images (N, C, H, W), any architecture

The prediction is the mean and standard deviation, over random initialisations, of the output
of the infinitely wide network trained by gradient flow for the given time on the mean squared
error (`torchntk.model_io.KernelModel`, `torchntk.GradientFlow`).
"""

from __future__ import annotations

import csv
import functools
import io
import math
import sys
from pathlib import Path

import click
import numpy as np

from ..model_io import KernelModel, ModelSettings, check_save_target
from .data import Table, column_names, read_table, select_features
from .kernel import (
    TILE_HELP,
    architecture_options,
    blocked_kernels,
    chosen_spec,
    describe_inputs,
    example_shape,
    make_progress,
    network_options,
    user_errors,
)
from .paths import check_output_dir, check_output_file
from .side import check_needed, load_side_inputs, side_input_options


class _Time(click.ParamType):
    """A training time: a number >= 0, or inf (trained to convergence)."""

    name = "TIME"

    def convert(self, value, param, ctx):
        try:
            t = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number; give a time >= 0, or 'inf'.", param, ctx)
        if math.isnan(t) or t < 0:
            self.fail(f"the time must be >= 0 (or inf), got {value}.", param, ctx)
        return t


@click.command()
@click.argument("train", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", "targets", multiple=True, required=True,
              help="Target column: a CSV header name, an array's column index (-1: last), or an .npz array "
                   "name. Repeat for several targets.")
@network_options
@click.option("--kernel", type=click.Choice(["ntk", "nngp"]), default="ntk", show_default=True,
              help="ntk: all layers trained; nngp: only the readout trained (t = inf is the exact GP posterior).")
@click.option("--time", "time_", type=_Time(), default="inf", show_default=True,
              help="Training time t (= learning rate x steps of gradient descent on the MSE); inf: converged.")
@click.option("--ridge", type=click.FloatRange(min=0), default=1e-10, show_default=True,
              help="Added to the training kernel's diagonal (0: exact interpolation at t = inf).")
@click.option("--classify", is_flag=True,
              help="The target holds integer class labels: fit their one-hot codes, and predict labels. A text "
                   "target column (strings) is always class labels; an integer one without this flag is a "
                   "regression on its values (with a hint when it holds few distinct integers).")
@click.option("--standardize/--no-standardize", default=True, show_default=True,
              help="Centre and scale each feature column and each regression target (undone on predictions); "
                   "class codes are never scaled.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory to write the model into (model.json + arrays.npz).")
@click.option("--array", default=None, help="In an .npz input, the name of the features array.")
@click.option("--tile", type=click.IntRange(min=1), default=None,
              help=TILE_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary (a hint about the target still shows).")
@architecture_options
@side_input_options(second=False)
@user_errors
def fit(train: Path, targets: tuple[str, ...], depth: int, activation: str, bias_std: float, weight_std: float,
        kernel: str, time_: float, ridge: float, classify: bool, standardize: bool, output: Path, array: str | None,
        tile: int | None, quiet: bool, spec_file: Path | None, input_shape: tuple[int, ...] | None,
        side_files: dict[str, Path]) -> None:
    """Fit an infinitely wide network to TRAIN (.csv, .npy or .npz) and save it to a directory.

    The saved model predicts, for new inputs, the mean and standard deviation over random
    initialisations of the network trained for time --time (see `torchntk predict`). A
    classifier (--classify, or a text target) is trained on the one-hot codes of its labels and
    predicts the label with the largest mean output. The training examples' side inputs
    (--adjacency for a --spec network with Aggregate, --mask for padded inputs) are saved with
    the model; `torchntk predict` then takes those of the new examples.
    """
    check_output_dir(output)
    check_save_target(output)  # never into another program's folder, and before the long work
    spec = chosen_spec(spec_file, input_shape)
    check_needed(spec, side_files, what="TRAIN", dense=spec is None)
    table = read_table(train, target=targets, array=array)
    labels = class_labels(table, classify, train)
    if labels is None:
        integer_hint(table)
    if spec is None:  # the dense network (an array of images is seen flattened)
        settings = ModelSettings.mlp(depth, activation.lower(), bias_std=bias_std, weight_std=weight_std,
                                     kernel=kernel, time=time_, ridge=ridge)
    else:
        settings = ModelSettings.with_spec(spec, example_shape(table, input_shape, train, spec), kernel=kernel,
                                           time=time_, ridge=ridge)
    side = load_side_inputs(side_files, table.x.shape[0], settings.input_shape, train)
    with make_progress(quiet) as progress:
        kernels = functools.partial(blocked_kernels, tile=tile, progress=progress,
                                    description=f"training kernel {table.x.shape[0]}x{table.x.shape[0]}")
        model = KernelModel.fit(table.x, table.y if labels is None else labels, settings,
                                task="regression" if labels is None else "classification", standardize_x=standardize,
                                standardize_y=standardize and labels is None, feature_names=table.feature_names,
                                target_names=table.target_names, kernels=kernels, side_inputs=side)
    model.save(output)
    if not quiet:
        inputs = describe_inputs(table, settings.input_shape or table.example_shape)
        if model.classes is None:
            names = ", ".join(table.target_names)
            what = f"{kernel} regression of {names} on {inputs}"
        else:
            what = (f"{kernel} classifier of {table.target_names[0]} ({len(model.classes)} classes) on {inputs}; "
                    f"training accuracy {100 * model.training_accuracy():.1f} %")
        click.echo(f"fitted {what}; saved to {output}", err=True)


FEW_CLASSES = 32
"""At most this many distinct integers in a regression target (and fewer than half the rows) make
`fit` suggest --classify."""


def class_labels(table: Table, classify: bool, path: Path) -> np.ndarray | None:
    """The class labels (N,) of a classification, as ints or strings; None for a regression.

    A text target is classes whatever the flags; --classify takes one numeric target of integers."""
    if table.labels is not None:
        if table.labels.shape[1] != 1:
            raise click.ClickException(f"{path}: target(s) {', '.join(table.target_names)} include text; text "
                                       "targets are class labels, and a classifier takes one target column.")
        return table.labels[:, 0]
    if not classify:
        return None
    if table.y.shape[1] != 1:
        raise click.UsageError(f"--classify takes one target column (the class labels); got "
                               f"{len(table.target_names)}: {', '.join(table.target_names)}.")
    y = table.y[:, 0]
    fractional = np.flatnonzero(y != np.round(y))
    if fractional.size:
        raise click.ClickException(f"{path}: --classify: target {table.target_names[0]!r} holds non-integer values "
                                   f"(data row {int(fractional[0]) + 1}: {y[fractional[0]]:g}); class labels are "
                                   "integers or text. Leave --classify out for a regression.")
    if np.abs(y).max() >= 2**53:
        raise click.ClickException(f"{path}: --classify: target {table.target_names[0]!r} holds integers beyond "
                                   "2^53, which float64 cannot hold exactly; encode the classes as smaller integers.")
    return y.astype(np.int64)


def integer_hint(table: Table) -> None:
    """One line on stderr when a regression target looks like class labels (few distinct integers)."""
    for name, column in zip(table.target_names, table.y.T, strict=True):
        distinct = np.unique(column)
        if np.all(distinct == np.round(distinct)) and 2 <= distinct.size <= min(FEW_CLASSES, column.size // 2):
            click.echo(f"hint: target {name!r} holds {distinct.size} distinct integers and is fitted as a regression "
                       "on their values; if they are class labels, add --classify.", err=True)


@click.command()
@click.argument("model_dir", metavar="MODEL", type=click.Path(exists=True, path_type=Path))
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="CSV file for the predictions (default: standard output).")
@click.option("--time", "time_", type=_Time(), default=None,
              help="Predict at this training time instead of the model's own (same eigendecomposition).")
@click.option("--array", default=None, help="In an .npz input, the name of the features array.")
@click.option("--tile", type=click.IntRange(min=1), default=None,
              help=TILE_HELP)
@click.option("--scores", is_flag=True,
              help="A classifier: also write each class's score (the mean output, score_<label>) and its std.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@side_input_options(second=False)
@user_errors
def predict(model_dir: Path, data: Path, output: Path | None, time_: float | None, array: str | None,
            tile: int | None, scores: bool, quiet: bool, side_files: dict[str, Path]) -> None:
    """Predict with a fitted MODEL directory on DATA (.csv, .npy or .npz): mean and std per row.

    Writes a CSV with columns ``mean`` and ``std`` (one target), or ``mean_<name>`` and
    ``std_<name>`` for each target (several). The std is over random initialisations of the
    network, in the target's units; it does not include observation noise. DATA must have the
    model's feature columns (by name for a CSV; target columns, if present, are ignored).

    For a classifier the CSV has one column ``label``, the class with the largest mean output,
    written as the training labels were (integers or text); with --scores also ``score_<label>``
    for each class (one-hot units: 1 at a training point of that class at t = inf) and ``std`` (the same
    for every class). When DATA holds the target column, the summary gives the accuracy.

    A model whose network reads side inputs (Aggregate: --adjacency) needs those of DATA's
    examples; a --mask is optional (without one every position of DATA is real).
    """
    if output is not None:
        check_output_file(output, (".csv",))
    model = KernelModel.load(model_dir)
    if scores and model.classes is None:
        raise click.UsageError("--scores is for classifiers; a regression model writes its mean and std already.")
    present = [name for name in model.target_names if name in column_names(data)]
    table = read_table(data, target=present, array=array)
    wanted = model.settings.input_shape
    if table.example_shape is not None and wanted is not None and table.example_shape != wanted:
        raise click.ClickException(f"{data} holds examples of shape {table.example_shape} but the model was fitted "
                                   f"on shape {wanted}.")
    x = select_features(table, model.feature_names, model.target_names, data)
    check_needed(model.settings.spec(), side_files, what=data.name, network="the model's network")
    side = load_side_inputs(side_files, x.shape[0], model.settings.input_shape, data)
    with make_progress(quiet) as progress:
        kernels = functools.partial(blocked_kernels, tile=tile, progress=progress,
                                    description=f"test kernel {x.shape[0]}x{model.x_train.shape[0]}")
        mean, std = model.predict(x, time=time_, kernels=kernels, side_inputs=side)
    if model.classes is None:
        write_predictions(output, mean, std, model.target_names)
    else:
        write_labels(output, model.classes[np.argmax(mean, axis=1)], mean if scores else None, std, model.classes)
    if not quiet:
        t = model.settings.time if time_ is None else time_
        inputs = describe_inputs(table, model.settings.input_shape or table.example_shape)
        kind = "regression" if model.classes is None else "classifier"
        line = (f"predicted {inputs} with the {model.settings.kernel} {kind} at t = {t:g}; wrote "
                f"{output if output is not None else 'standard output'}")
        accuracy = _accuracy(model, table, mean) if present else None
        if accuracy is not None:
            line += f"; accuracy {100 * accuracy:.1f} % against the file's {present[0]!r} column"
        click.echo(line, err=True)


def _accuracy(model: KernelModel, table: Table, mean: np.ndarray) -> float | None:
    """A classifier's accuracy on rows whose labels the file holds (None for a regression, or
    labels of another type than the classes)."""
    if model.classes is None:
        return None
    predicted = model.classes[np.argmax(mean, axis=1)]
    if model.classes.dtype.kind in "US":
        truth = table.labels[:, 0] if table.labels is not None else None
    else:
        truth = table.y[:, 0] if table.y is not None else None
    return None if truth is None else float(np.mean(predicted == truth))


def write_labels(output: Path | None, labels: np.ndarray, mean: np.ndarray | None, std: np.ndarray,
                 classes: np.ndarray) -> None:
    """CSV of a classifier's labels (as the classes are: ints or text), with mean[:, c] as
    score_<class> and the std when ``mean`` is given, to a file or stdout."""
    header = ["label"]
    columns = [labels.astype(str)]
    if mean is not None:
        header += [f"score_{c}" for c in classes.tolist()] + ["std"]
        columns += list(np.char.mod("%.12g", np.column_stack([mean, std[:, 0]])).T)
    rows = np.column_stack(columns).tolist()
    if output is None:
        _write_rows(sys.stdout, header, rows)
    else:
        with open(output, "w", encoding="utf-8", newline="") as handle:
            _write_rows(handle, header, rows)


def _write_rows(handle, header: list[str], rows: list[list[str]]) -> None:
    writer = csv.writer(handle, lineterminator="\n")  # quotes labels that hold commas
    writer.writerow(header)
    writer.writerows(rows)


def write_predictions(output: Path | None, mean: np.ndarray, std: np.ndarray, target_names: tuple[str, ...]) -> None:
    """CSV with mean/std columns (mean_<k>/std_<k> for several targets), to a file or stdout."""
    if len(target_names) == 1:
        header, columns = ["mean", "std"], [mean[:, 0], std[:, 0]]
    else:
        header = [f"mean_{n}" for n in target_names] + [f"std_{n}" for n in target_names]
        columns = [*mean.T, *std.T]
    table = np.column_stack(columns)
    line = io.StringIO()
    csv.writer(line, lineterminator="").writerow(header)  # quotes names that hold commas
    if output is None:
        np.savetxt(sys.stdout, table, delimiter=",", header=line.getvalue(), comments="",
                   fmt="%.12g")
    else:
        with open(output, "w", encoding="utf-8", newline="") as handle:
            np.savetxt(handle, table, delimiter=",", header=line.getvalue(), comments="", fmt="%.12g")
