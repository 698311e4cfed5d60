"""``torchntk reproduce`` and ``torchntk study``: the paper's claims measured on finite networks.

    torchntk reproduce                      # quick: about five minutes on two CPU cores
    torchntk reproduce --full               # the paper's widths (up to 10,000): hours on a CPU
    torchntk reproduce --out report/ --seed 0
    torchntk study --depth 3 --activation tanh --widths 64,256,1024 --data gaussian --dim 3
    torchntk study --spec cnn.json --data images.npy --widths 16,64,256 --seeds 3   # any architecture

Both write PNG figures, report.html (self-contained), report.md and results.json into --out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .._finite import MAX_DEPTH
from ..activations import CLOSED_FORM, QUADRATURE
from .kernel import architecture_options, chosen_spec, example_shape, user_errors
from .paths import check_output_dir

if TYPE_CHECKING:
    from ..studies.progress import ProgressLike

ACTIVATIONS = tuple(sorted([*CLOSED_FORM, *QUADRATURE]))


def _widths(_ctx, _param, value: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in value.replace(" ", "").split(",") if w)
    except ValueError:
        raise click.BadParameter(f"widths must be integers separated by commas, e.g. 64,256,1024; got {value!r}.") \
            from None
    if len(widths) < 3 or min(widths) < 1 or len(set(widths)) != len(widths):
        raise click.BadParameter(f"give at least three distinct positive widths, e.g. 64,256,1024; got {value!r}.")
    return tuple(sorted(widths))


def _experiments(_ctx, _param, value: str | None) -> tuple[str, ...]:
    from ..studies.runner import EXPERIMENTS

    if value is None:
        return EXPERIMENTS
    chosen = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [v for v in chosen if v not in EXPERIMENTS]
    if unknown or not chosen:
        raise click.BadParameter(f"choose among {', '.join(EXPERIMENTS)} (comma-separated); got {value!r}.")
    return chosen


def _finish(paths: dict[str, Path], started: float, quiet: bool) -> None:
    import json

    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True, quiet=quiet)
    claims = json.loads(paths["json"].read_text(encoding="utf-8"))["claims"]
    table = Table(title="Claims and verdicts")
    for column in ("claim", "measured", "verdict"):
        table.add_column(column, overflow="fold")
    colours = {"borne out": "green", "inconclusive": "yellow", "not borne out": "red"}
    for claim in claims:
        colour = colours.get(claim["verdict"], "white")
        table.add_row(claim["statement"], claim["measured"], f"[{colour}]{claim['verdict']}[/{colour}]")
    console.print(table)
    console.print(f"Report: {paths['html']} (also {paths['markdown'].name}, {paths['json'].name} and the PNG "
                  f"figures in {paths['html'].parent}); wall time {time.perf_counter() - started:.0f} s.")


@contextmanager
def _progress(quiet: bool) -> Iterator[ProgressLike]:
    """Bars on a terminal; a line per step when stderr goes to a file (a log of an hours-long run
    would otherwise stay empty until the end); nothing with --quiet."""
    from rich.console import Console

    from ..studies.progress import LineLog, RichBars, Silent, make_bars

    console = Console(stderr=True, quiet=quiet)
    if quiet:
        yield Silent()
    elif not console.is_terminal:
        yield LineLog()
    else:
        with make_bars(console) as bars:
            yield RichBars(bars)


@click.command()
@click.option("--full", is_flag=True, help="The paper's settings (widths up to 10,000; hours on a CPU). "
                                          "Default: quick mode, about five minutes on two cores.")
@click.option("--smoke", is_flag=True, help="A seconds-long run with tiny networks that checks the installation; "
                                           "its numbers are not meant to bear out the theory.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True, help="Folder for the figures, report.html, report.md and results.json.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Every random draw derives from it; the same seed gives the same report.")
@click.option("--only", callback=_experiments, default=None, metavar="LIST",
              help="Run only some of fig1,fig2,fig3,sweep (comma-separated).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes running the experiments side by side (default: one per CPU core).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads per worker (default: cores / workers). Other thread counts can change the "
                   "last digits.")
@click.option("--quiet", is_flag=True, help="No progress bars or summary.")
@user_errors
def reproduce(full: bool, smoke: bool, out: Path, seed: int, only: tuple[str, ...], workers: int | None,
              threads: int | None, quiet: bool) -> None:
    """Reproduce the paper's experiments and measure the appendix's theorems on finite networks.

    Figures 1-3 of the paper (NTK convergence on the circle, kernel regression on 4 points,
    convergence along a kernel principal component on MNIST) and Proposition 1, Theorems 1-2
    and Lemma 1 over a sweep of widths with fitted convergence rates. Writes PNG figures and a
    self-contained report.html saying, for each claim, whether this run bears it out.
    """
    from ..studies import full_settings, quick_settings
    from ..studies.config import smoke_settings
    from ..studies.runner import reproduce as run

    if full and smoke:
        raise click.UsageError("--full and --smoke exclude each other.")
    from ..studies.report import REPORT_FILES

    check_output_dir(out, "--out", replaces=REPORT_FILES)
    started = time.perf_counter()
    settings = full_settings() if full else smoke_settings() if smoke else quick_settings()
    with _progress(quiet) as progress:
        paths = run(settings, seed, out, progress, only=only, threads=threads, workers=workers)  # None: per core
    _finish(paths, started, quiet)


@click.command()
@click.option("--depth", type=click.IntRange(min=2, max=MAX_DEPTH), default=4, show_default=True,
              help="Dense layers (>= 2; 4 = three hidden layers).")
@click.option("--activation", type=click.Choice(ACTIVATIONS, case_sensitive=False), default="relu",
              show_default=True, help="Nonlinearity between the dense layers.")
@click.option("--bias-std", type=click.FloatRange(min=0), default=0.1, show_default=True, help="beta.")
@click.option("--weight-std", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="sigma_w.")
@click.option("--widths", callback=_widths, default="64,128,256,512,1024", show_default=True,
              help="Hidden widths of the sweep (comma-separated; at least three, best >= 4 spanning >= 16x).")
@click.option("--seeds", type=click.IntRange(min=2), default=6, show_default=True,
              help="Networks trained per width.")
@click.option("--gaussian-seeds", type=click.IntRange(min=4), default=100, show_default=True,
              help="Networks per width drawn for the Gaussianity checks (at least --seeds).")
@click.option("--outputs", type=click.IntRange(min=1), default=2, show_default=True, help="Output units n_L.")
@click.option("--data", default="circle", show_default=True,
              help="circle, gaussian, mnist, digits, or a .npy/.npz/.csv file (a CSV needs a header row).")
@click.option("--points", type=click.IntRange(min=2), default=12, show_default=True,
              help="Number of data points (a file's first rows).")
@click.option("--dim", type=click.IntRange(min=1), default=2, show_default=True, help="Input dimension of 'gaussian'.")
@click.option("--target", default=None, help="A file's target column (CSV header name or array column index); "
                                             "default: the target x1 x2 of the paper's Figure 1.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Learning rate of full-batch gradient descent on C = (1/2N) sum |f - y|^2.")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True, help="Training steps.")
@click.option("--record-every", type=click.IntRange(min=1), default=20, show_default=True,
              help="Record the NTK, weights and activations every this many steps.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("study"),
              show_default=True, help="Folder for the figures and the report.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of every random draw.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
@click.option("--quiet", is_flag=True, help="No progress bars or summary.")
@architecture_options
@user_errors
def study(depth, activation, bias_std, weight_std, widths, seeds, gaussian_seeds, outputs, data, points, dim,
          target, lr, steps, record_every, out, seed, threads, quiet, spec_file, input_shape) -> None:
    """Measure Proposition 1, Theorems 1-2 and Lemma 1 for your own network, data and training.

    Draws, measures and trains networks of each width, fits the log-log slope of each distance
    against width with its uncertainty, and writes the same report as `torchntk reproduce`.
    With --spec FILE.json (any architecture: convolutions, pooling, branches) it measures
    Proposition 1 and Theorem 1 at initialisation only, into report.md and results.json.
    """
    if spec_file is not None:
        _arch_study(spec_file, input_shape, widths, seeds, outputs, data, points, out, seed, threads, quiet)
        return
    from ..studies import NetworkSettings, SweepSettings
    from ..studies.config import derive_seed
    from ..studies.report import REPORT_FILES
    from ..studies.runner import study as run

    started = time.perf_counter()
    check_output_dir(out, "--out", replaces=REPORT_FILES)
    dataset = _dataset(data, points, dim, target, derive_seed(seed, "sweep-data"))
    settings = SweepSettings(network=NetworkSettings(depth, activation.lower(), bias_std, weight_std), widths=widths,
                             seeds=seeds, gaussian_seeds=max(gaussian_seeds, seeds), out_features=outputs, data=data,
                             points=len(dataset), data_dim=dataset.x.shape[1], lr=lr, steps=steps,
                             record_every=record_every)
    with _progress(quiet) as progress:
        paths = run(settings, dataset, seed, out, progress, threads=threads)
    _finish(paths, started, quiet)


_TRAINING_FLAGS = {"gaussian_seeds": "--gaussian-seeds", "lr": "--lr", "steps": "--steps",
                   "record_every": "--record-every", "target": "--target", "dim": "--dim"}


def _arch_study(spec_file, input_shape, widths, seeds, outputs, data, points, out, seed, threads, quiet) -> None:
    """``study --spec``: Proposition 1 and Theorem 1 at initialisation for an architecture."""
    import torch

    from ..studies.arch_sweep import ARCH_REPORT_FILES, measure_arch_sweep, write_arch_report

    ctx = click.get_current_context()
    given = [flag for name, flag in _TRAINING_FLAGS.items()
             if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE]
    if given:
        raise click.UsageError(f"with --spec the study measures Proposition 1 and Theorem 1 at initialisation; "
                               f"{', '.join(given)} belong to the training and Gaussianity statements, which are "
                               "measured for fully-connected networks only: leave them out.")
    spec = chosen_spec(spec_file, input_shape)
    check_output_dir(out, "--out", replaces=ARCH_REPORT_FILES)
    started = time.perf_counter()
    x, source = _images(data, points, input_shape)
    if threads is not None:
        torch.set_num_threads(threads)
    sweep = measure_arch_sweep(spec, x, widths, seeds, seed, out_features=outputs)
    paths = write_arch_report(sweep, out, source)
    if not quiet:
        for name, fit in (("Theorem 1", sweep.theorem1), ("Proposition 1", sweep.proposition1)):
            if fit is not None:
                click.echo(f"{name}: slope {fit.describe()}: {fit.verdict}", err=True)
        click.echo(f"Report: {paths['report']} (also {paths['results'].name}); "
                   f"{time.perf_counter() - started:.0f} s", err=True)


def _images(data: str, points: int, input_shape):
    """(x (N, C, ...), source) for an architecture sweep: a data file (arrays of images keep their
    shape; 2-D tables need --input-shape) or the built-in 'digits' / 'mnist' as images."""
    import numpy as np

    from ..studies.data import load_data
    from .data import read_table

    name = data.lower()
    if name in ("digits", "mnist"):
        dataset = load_data(name, points, seed=0)
        side = int(round(dataset.x.shape[1] ** 0.5))
        shape = input_shape or (1, side, side)
        x = dataset.x
        source = dataset.source
    elif name in ("circle", "gaussian"):
        raise click.BadParameter(f"--data {data} holds vectors; an architecture sweep takes images: 'digits', "
                                 "'mnist', or a file of images (N, C, H, W).", param_hint="--data")
    else:
        table = read_table(data)
        shape = example_shape(table, input_shape, Path(data))
        x = table.x
        source = f"{min(points, x.shape[0])} rows of {Path(data).name}"
        if shape is None:
            shape = (x.shape[1],)
    x = np.asarray(x[:points], dtype=np.float64)
    if int(np.prod(shape)) != x.shape[1]:
        raise click.BadParameter(f"{x.shape[1]} values per example cannot be reshaped to {shape}.",
                                 param_hint="--input-shape")
    if x.shape[0] < 2:
        raise click.BadParameter(f"{data} has {x.shape[0]} example(s); a sweep needs at least 2.", param_hint="--data")
    return x.reshape(x.shape[0], *shape), source


def _dataset(data: str, points: int, dim: int, target: str | None, seed: int):
    from ..studies.data import BUILTIN, Dataset, load_data, product_target

    if data.lower() in BUILTIN:
        if target is not None:
            raise click.BadParameter("--target picks a column of a data file; the built-in sets have their own "
                                     "targets.", param_hint="--target")
        return load_data(data, points, seed=seed, dim=dim)
    from .data import read_table

    table = read_table(data, target=(target,) if target is not None else ())
    x = table.x[:points]
    if x.shape[0] < 2:
        raise click.BadParameter(f"{data} has {x.shape[0]} data row(s); a study needs at least 2 points "
                                 "(give a file with more rows).", param_hint="--data")
    y = table.y[:points, :1] if table.y is not None else product_target(x)
    what = f"target column {target!r}" if target is not None else "target x1 x2"
    name = Path(data).name
    return Dataset(x, y, name, f"{x.shape[0]} rows of {name} ({x.shape[1]} input columns); {what}")
