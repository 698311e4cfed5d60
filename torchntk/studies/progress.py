"""Progress reporting for long experiments, so the library stays silent and the CLI shows bars.

Experiments take a ``progress`` object with one method, ``task(description, total)``, returning
something with ``advance(steps=1)``. `Silent` (the default) does nothing; `RichBars` draws one
rich progress bar per task.
"""

from __future__ import annotations

from typing import Any, Protocol


class Task(Protocol):
    def advance(self, steps: int = 1) -> None: ...


class ProgressLike(Protocol):
    def task(self, description: str, total: int) -> Task: ...


class _NoTask:
    def advance(self, steps: int = 1) -> None:
        pass


class Silent:
    """No output."""

    def task(self, description: str, total: int) -> Task:
        return _NoTask()


class _RichTask:
    def __init__(self, bars: Any, task_id: Any) -> None:
        self._bars, self._id = bars, task_id

    def advance(self, steps: int = 1) -> None:
        self._bars.advance(self._id, steps)


class RichBars:
    """Bars on a ``rich.progress.Progress`` that the caller starts and stops (a context manager)."""

    def __init__(self, bars: Any) -> None:
        self._bars = bars

    def task(self, description: str, total: int) -> Task:
        return _RichTask(self._bars, self._bars.add_task(description, total=total))


def make_bars(console: Any = None) -> Any:
    """A rich Progress with a description, a bar, counts, elapsed and remaining time."""
    from .._progress import rich_progress

    return rich_progress(console=console)
