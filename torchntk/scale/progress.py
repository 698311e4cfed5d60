"""Progress bar (rich) and end-of-run summary for tiled kernel computations."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class RunSummary:
    """What one `kernel_matrix` call did.

    tiles: tiles in the store's schedule; computed: tiles this call computed; skipped: tiles
    already complete on disk; entries: kernel entries this call computed; features: the input
    dimension d (each entry's inner product costs 2 d flops, so GEMM GFLOP/s = 2 d entries / s);
    damaged: tiles recorded complete whose files failed the check on resume, recomputed (counted
    in ``computed``).
    """

    tiles: int
    computed: int
    skipped: int
    seconds: float
    entries: int
    features: int
    damaged: int = 0

    @property
    def entries_per_second(self) -> float:
        """Kernel entries computed per second of this call (NaN when it took no time)."""
        return self.entries / self.seconds if self.seconds > 0 else float("nan")

    @property
    def gemm_gflops(self) -> float:
        """The GEMM-equivalent rate in GFLOP/s, 2 d entries / s / 1e9 (d = ``features``), the rate
        a matrix product of the inputs would need to run at to compute the same entries."""
        return 2 * self.features * self.entries_per_second / 1e9

    def __str__(self) -> str:
        if not self.computed:
            return f"{self.tiles} tiles, all already on disk: nothing to compute"
        repaired = f" ({self.damaged} of them damaged on disk and recomputed)" if self.damaged else ""
        return (f"{self.tiles} tiles: {self.computed} computed{repaired}, {self.skipped} already on disk; "
                f"{self.seconds:.1f} s, {self.entries_per_second:.3g} entries/s "
                f"({self.gemm_gflops:.3g} GEMM-equivalent GFLOP/s)")


class TileProgress:
    """A rich progress bar over tiles showing entries/s and time left; silent when disabled.
    Safe to advance from a writer thread."""

    def __init__(self, total: int, done: int, label: str, enabled: bool) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._entries = 0
        self._start = time.perf_counter()
        self._bar = None
        if enabled:
            from rich.progress import TextColumn

            from .._progress import rich_progress

            self._bar = rich_progress(TextColumn("{task.fields[rate]}"))
            self._task = self._bar.add_task(label, total=total, completed=done, rate="")

    def __enter__(self) -> TileProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, entries: int) -> None:
        """Count one finished tile of ``entries`` kernel entries (and show the running rate)."""
        with self._lock:
            self._entries += entries
            if self._bar is not None:
                rate = self._entries / max(time.perf_counter() - self._start, 1e-9)
                self._bar.update(self._task, advance=1, rate=f"{rate:.3g} entries/s")

    def report(self, summary: RunSummary, path: str) -> None:
        """Print the run's summary for the store at ``path`` on stderr (when enabled)."""
        if self.enabled:
            from rich.console import Console

            Console(stderr=True).print(f"[bold]kernel store[/bold] {path}: {summary}")
