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
from .data import read_table, select_features
from .kernel import (
    TILE_HELP,
    architecture_options,
    blocked_kernels,
    chosen_spec,
    example_shape,
    make_progress,
    network_options,
    user_errors,
)
from .paths import check_output_dir, check_output_file


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
@click.option("--standardize/--no-standardize", default=True, show_default=True,
              help="Centre and scale each feature and target column (undone on predictions).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory to write the model into (model.json + arrays.npz).")
@click.option("--array", default=None, help="In an .npz input, the name of the features array.")
@click.option("--tile", type=click.IntRange(min=1), default=None,
              help=TILE_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@architecture_options
@user_errors
def fit(train: Path, targets: tuple[str, ...], depth: int, activation: str, bias_std: float, weight_std: float,
        kernel: str, time_: float, ridge: float, standardize: bool, output: Path, array: str | None,
        tile: int | None, quiet: bool, spec_file: Path | None, input_shape: tuple[int, ...] | None) -> None:
    """Fit an infinitely wide network to TRAIN (.csv, .npy or .npz) and save it to a directory.

    The saved model predicts, for new inputs, the mean and standard deviation over random
    initialisations of the network trained for time --time (see `torchntk predict`).
    """
    check_output_dir(output)
    check_save_target(output)  # never into another program's folder, and before the long work
    spec = chosen_spec(spec_file, input_shape)
    table = read_table(train, target=targets, array=array)
    if spec is None:  # the dense network (an array of images is seen flattened)
        settings = ModelSettings.mlp(depth, activation.lower(), bias_std=bias_std, weight_std=weight_std,
                                     kernel=kernel, time=time_, ridge=ridge)
    else:
        settings = ModelSettings.with_spec(spec, example_shape(table, input_shape, train), kernel=kernel, time=time_,
                                           ridge=ridge)
    with make_progress(quiet) as progress:
        kernels = functools.partial(blocked_kernels, tile=tile, progress=progress,
                                    description=f"training kernel {table.x.shape[0]}x{table.x.shape[0]}")
        model = KernelModel.fit(table.x, table.y, settings, standardize_x=standardize, standardize_y=standardize,
                                feature_names=table.feature_names, target_names=table.target_names, kernels=kernels)
    model.save(output)
    if not quiet:
        click.echo(f"fitted {kernel} model on {table.x.shape[0]} rows x {table.x.shape[1]} features "
                   f"({len(table.target_names)} target(s)); saved to {output}", err=True)


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
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@user_errors
def predict(model_dir: Path, data: Path, output: Path | None, time_: float | None, array: str | None,
            tile: int | None, quiet: bool) -> None:
    """Predict with a fitted MODEL directory on DATA (.csv, .npy or .npz): mean and std per row.

    Writes a CSV with columns ``mean`` and ``std`` (one target), or ``mean_<name>`` and
    ``std_<name>`` for each target (several). The std is over random initialisations of the
    network, in the target's units; it does not include observation noise. DATA must have the
    model's feature columns (by name for a CSV; target columns, if present, are ignored).
    """
    if output is not None:
        check_output_file(output, (".csv",))
    model = KernelModel.load(model_dir)
    table = read_table(data, array=array)
    wanted = model.settings.input_shape
    if table.example_shape is not None and wanted is not None and table.example_shape != wanted:
        raise click.ClickException(f"{data} holds examples of shape {table.example_shape} but the model was fitted "
                                   f"on shape {wanted}.")
    x = select_features(table, model.feature_names, model.target_names, data)
    with make_progress(quiet) as progress:
        kernels = functools.partial(blocked_kernels, tile=tile, progress=progress,
                                    description=f"test kernel {x.shape[0]}x{model.x_train.shape[0]}")
        mean, std = model.predict(x, time=time_, kernels=kernels)
    write_predictions(output, mean, std, model.target_names)


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
