"""Where the command line writes: every command checks its output paths here, before any long
computation, so that a missing or read-only folder is one `Error:` line at once rather than a
traceback after the whole kernel has been computed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import click


def _probe_writable(folder: Path, option: str, shown: Path) -> None:
    """Create and remove a temporary file in ``folder``: the only test that also catches
    read-only filesystems and permissions os.access cannot see (ACLs, root squash)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".torchntk-probe-"):
            pass
    except OSError as exc:
        raise click.ClickException(f"{option} {shown}: cannot write into the folder {folder} "
                                   f"({exc.strerror or exc}); choose a folder you can write to.") from None


def _existing_ancestor(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def check_output_file(path: Path, suffixes: Sequence[str], option: str = "-o/--output") -> Path:
    """Refuse (one ``Error:`` line) an output file that cannot be written: a wrong suffix
    (compared case-insensitively; a usage error, exit code 2), a directory, a missing or
    read-only folder (exit code 1)."""
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise click.UsageError(f"{option} {path}: use a file name ending in {', '.join(suffixes)}.")
    if path.is_dir():
        raise click.ClickException(f"{option} {path}: is a folder; give a file name such as "
                                   f"{path / ('out' + suffixes[0])}.")
    folder = path.absolute().parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise click.ClickException(f"{option} {path}: the folder {folder} {what}; create it first "
                                   "(mkdir -p) or write elsewhere.")
    if path.exists() and not os.access(path, os.W_OK):
        raise click.ClickException(f"{option} {path}: the file exists and is read-only; remove it or write "
                                   "elsewhere.")
    _probe_writable(folder, option, path)
    return path


def check_output_dir(path: Path, option: str = "-o/--output", replaces: Sequence[str] = ()) -> Path:
    """Refuse (one ClickException line) an output folder that cannot be created or written
    into, or that holds a file of one of the names in ``replaces`` that torchntk did not write
    (it would be overwritten). Missing parent folders are fine (they are created) if the nearest
    existing one is writable."""
    from .._outputs import check_replaceable

    if path.exists() and not path.is_dir():
        raise click.ClickException(f"{option} {path}: is a file; give a folder name (it is created if needed).")
    folder = path if path.is_dir() else _existing_ancestor(path)
    if not folder.is_dir():
        raise click.ClickException(f"{option} {path}: {folder} is not a folder; choose another output path.")
    _probe_writable(folder, option, path)
    try:
        check_replaceable(path, replaces)
    except ValueError as exc:
        raise click.ClickException(f"{option} {exc}") from None
    return path
