"""Progress reporting for long experiments, so the library stays silent and the CLI shows bars.

Experiments take a ``progress`` object with one method, ``task(description, total)``, returning
something with ``advance(steps=1)``. `Silent` (the default) does nothing; `RichBars` draws one
rich progress bar per task.
"""

from __future__ import annotations

from typing import Any, Protocol


class Task(Protocol):
    """One running task of a progress reporter."""

    def advance(self, steps: int = 1) -> None:
        """Record ``steps`` more steps done out of the task's total."""
        ...


class ProgressLike(Protocol):
    """What experiments accept as ``progress``: a factory of tasks."""

    def task(self, description: str, total: int) -> Task:
        """Start a task of ``total`` steps, labelled ``description``, and return it."""
        ...


class _NoTask:
    def advance(self, steps: int = 1) -> None:
        pass


class Silent:
    """No output."""

    def task(self, description: str, total: int) -> Task:
        """A task whose ``advance`` does nothing."""
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
        """A new bar of ``total`` steps labelled ``description``; its task's ``advance`` moves it."""
        return _RichTask(self._bars, self._bars.add_task(description, total=total))


def make_bars(console: Any = None) -> Any:
    """A rich Progress with a description, a bar, counts, elapsed and remaining time."""
    from .._progress import rich_progress

    return rich_progress(console=console)
