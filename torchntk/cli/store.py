"""``torchntk store verify``: check every tile of a kernel store against its recorded checksum.

    torchntk store verify K.zarr            # report damaged tiles (exit code 1 if any)
    torchntk store verify K.zarr --repair   # also unmark them, so kernel_matrix recomputes them
"""

from __future__ import annotations

from pathlib import Path

import click

from .kernel import user_errors


@click.group()
def store() -> None:
    """Inspect kernel stores written by torchntk.kernel_matrix."""


@store.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--repair", is_flag=True, help="Unmark damaged tiles so that the next kernel_matrix call with the "
                                            "same arguments recomputes them (takes the store's lock).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing when every tile is intact.")
@user_errors
def verify(path: Path, repair: bool, quiet: bool) -> None:
    """Check that every tile of the store PATH recorded complete has its chunk files, at the right
    size and with the sha256 recorded when it was written."""
    from ..scale.store import KernelStore

    kernel_store = KernelStore.open(path)
    done = kernel_store.done()
    total = len(kernel_store.grid.tiles())
    if repair:
        with kernel_store.lock():
            problems = kernel_store.check_tiles(checksum=True, repair=True)
    else:
        problems = kernel_store.check_tiles(checksum=True)
    for (i, j), why in problems.items():
        click.echo(f"tile ({i}, {j}): {why}", err=True)
    if not problems:
        if not quiet:
            click.echo(f"{path}: all {len(done)} recorded tiles intact ({total - len(done)} of {total} still to "
                       "compute).", err=True)
        return
    if repair:
        click.echo(f"{path}: {len(problems)} damaged tile(s) unmarked; run torchntk.kernel_matrix with the same "
                   "arguments to recompute them.", err=True)
        return
    raise click.ClickException(f"{path}: {len(problems)} of {len(done)} recorded tiles are damaged; rerun "
                               "torchntk.kernel_matrix with the same arguments and verify=True (or this command "
                               "with --repair, then kernel_matrix) to recompute them.")
