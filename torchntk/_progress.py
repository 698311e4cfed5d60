"""The one rich progress-bar layout that every long-running part of torchntk shows."""

from __future__ import annotations

from typing import Any


def rich_progress(*extra_columns: Any, console: Any = None, **options: Any) -> Any:
    """A ``rich.progress.Progress``: description, bar, done/total, ``extra_columns``, elapsed and
    remaining time. On stderr unless a console is given (stdout may carry results); ``options``
    go to Progress (e.g. ``transient``, ``disable``). rich is imported here, on first use."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra_columns,
                    TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console if console is not None else Console(stderr=True), **options)
