"""Progress reporting for long experiments, so the library stays silent and the CLI shows bars.

Experiments take a ``progress`` object with one method, ``task(description, total)``, returning
something with ``advance(steps=1)``. `Silent` (the default) does nothing; `RichBars` draws one
rich progress bar per task; `LineLog` writes a line per step, for a run whose output goes to a
file (a full reproduce run takes hours, and bars drawn for a terminal leave a log empty).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO


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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class _LineTask:
    def __init__(self, log: LineLog, description: str, total: int) -> None:
        self._log, self._description, self._total = log, description, total
        self._done, self._started = 0, log.clock()

    def advance(self, steps: int = 1) -> None:
        self._done += steps
        elapsed = self._log.clock() - self._started
        left = elapsed / self._done * (self._total - self._done) if 0 < self._done < self._total else 0.0
        self._log.write(f"{self._description}: {self._done}/{self._total} done, {_duration(elapsed)} elapsed"
                        + (f", about {_duration(left)} left" if self._done < self._total else ""))


class LineLog:
    """One timestamped line per step of every task: ``HH:MM:SS description: k/total done, elapsed,
    about ... left``, flushed at once, so that ``tail -f`` on a redirected run shows where it is.

    The time left assumes the task's remaining steps take as long as its finished ones did on
    average (on a resumed run, steps read back from disk go by at once and make it optimistic
    until new work has been timed)."""

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 stamp: Callable[[], str] = lambda: time.strftime("%H:%M:%S")) -> None:
        self._stream, self.clock, self._stamp = stream, clock, stamp

    def write(self, line: str) -> None:
        """Write ``line`` with the time of day in front, and flush."""
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write(f"{self._stamp()} {line}\n")
        stream.flush()

    def task(self, description: str, total: int) -> Task:
        """Announce a task of ``total`` steps; its ``advance`` writes a line per call."""
        self.write(f"{description}: started, {total} to do")
        return _LineTask(self, description, total)
