"""Run the paper's experiments (`reproduce`) or the width sweep on a user's choice (`study`),
and write the report.

    reproduce(quick_settings(), seed=0, out="report/")
    study(SweepSettings(widths=(64, 256, 1024), ...), load_data("circle", 12), seed=0, out="study/")
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .._outputs import check_replaceable
from .config import ReproduceSettings, SweepSettings, derive_seed
from .data import Dataset, load_data
from .progress import ProgressLike, Silent
from .report import REPORT_FILES, write_report
from .results import Section, section_from_dict

EXPERIMENTS = ("fig1", "fig2", "fig3", "sweep")
LARGE = ("fig3",)
"""Experiments whose matrix products are large enough to gain from several CPU threads (512
digits x 784 pixels x width); the others train small batches, where extra threads only add
synchronization (and, on a busy machine, spinning threads slow them down many times over)."""


@contextmanager
def cpu_threads(count: int | None):
    """Run the block with ``count`` torch CPU threads (None: leave as is), then restore."""
    import torch

    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _meta(mode: str, seed: int) -> dict[str, Any]:
    import platform

    import torch

    from .. import __version__

    return {"mode": mode, "seed": seed, "torchntk": __version__, "torch": torch.__version__,
            "python": platform.python_version(),
            "precision": "networks and empirical NTKs in float32; limiting kernels and analysis in float64"}


PIECES = "pieces"
"""Sub-folder of a run's output that keeps its finished pieces (experiments, sweep networks)."""


def run_experiment(name: str, settings: ReproduceSettings, seed: int, out: str | Path,
                   progress: ProgressLike | None = None) -> list[Section]:
    """One experiment of `reproduce` ("fig1", "fig2", "fig3" or "sweep"): its report sections.

    Resumable: a finished experiment's sections are kept in ``out/pieces/NAME.json`` (with its
    figures in ``out``), and Figures 1 and 3 and the width sweep keep every finished network in
    ``out/pieces/fig1/``, ``fig3/`` and ``sweep/``;
    a rerun with the same settings and seed reuses them and computes only what is missing.
    Delete ``out/pieces`` to start over.
    """
    out = Path(out)
    cache = out / PIECES / f"{name}.json"
    key = _piece_key(name, settings, seed)
    if cache.exists():
        try:
            saved = json.loads(cache.read_text(encoding="utf-8"))
            if saved.get("key") == key:
                sections = [section_from_dict(d, out) for d in saved["sections"]]
                if all(f.path.exists() for s in sections for f in s.figures):
                    return sections
        except (OSError, ValueError, KeyError, TypeError):  # torn or foreign: run the experiment again
            pass
    sections = _run_experiment(name, settings, seed, out, progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(cache.name + ".partial")
    partial.write_text(json.dumps({"key": key, "sections": [s.as_dict() for s in sections]}), encoding="utf-8")
    os.replace(partial, cache)
    return sections


def _piece_key(name: str, settings: ReproduceSettings, seed: int) -> str:
    """What determines an experiment's results: its own settings, the seed, the library version."""
    from .. import __version__

    part = getattr(settings, name, None)
    blob = json.dumps({"name": name, "settings": asdict(part) if part is not None else None, "seed": seed,
                       "torchntk": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _run_experiment(name: str, settings: ReproduceSettings, seed: int, out: Path,
                    progress: ProgressLike | None) -> list[Section]:
    from .fig1_ntk import run_fig1
    from .fig2_regression import run_fig2
    from .fig3_pca import run_fig3
    from .theorems import analyse_sweep
    from .width_sweep import measure_sweep

    if name == "fig1":
        return [run_fig1(settings.fig1, seed, out, progress, store=out / PIECES / "fig1")]
    if name == "fig2":
        return [run_fig2(settings.fig2, seed, out, progress)]
    if name == "fig3":
        return [run_fig3(settings.fig3, seed, out, progress, store=out / PIECES / "fig3")]
    if name != "sweep":
        raise ValueError(f"unknown experiment {name!r}; choose among {EXPERIMENTS}.")
    sweep = settings.sweep
    data = load_data(sweep.data, sweep.points, seed=derive_seed(seed, "sweep-data"), dim=sweep.data_dim)
    measured = measure_sweep(sweep, data, seed, progress, "Appendix: width sweep", store=out / PIECES / "sweep")
    return analyse_sweep(measured, sweep, data, seed, out)


LONGEST_FIRST = ("fig1", "fig3", "sweep", "fig2")
"""Submission order for the worker pool (longest first balances two workers best)."""


def reproduce(settings: ReproduceSettings, seed: int, out: str | Path, progress: ProgressLike | None = None,
              only: tuple[str, ...] = EXPERIMENTS, threads: int | None = None,
              workers: int | None = 1) -> dict[str, Path]:
    """Run the paper's three experiments and the appendix's width sweep; write the report.

    Args:
        settings: `quick_settings()`, `full_settings()` or `config.smoke_settings()` (or a modified copy).
        seed: every random draw (networks, data, bootstrap) derives from it; the same seed gives
            the same numbers.
        out: folder for the PNG figures, report.html, report.md and results.json.
        progress: a progress object (`progress.RichBars`), or None for silence.
        only: a subset of ("fig1", "fig2", "fig3", "sweep").
        workers: processes running experiments side by side; None for one per CPU core (at most
            one per experiment; what `torchntk reproduce` does); 1 (default) runs them here, one
            after the other. With more than one, Figure 3's networks (most of a full run) are
            trained one job per network, and its section is assembled from them here. Worker
            processes are spawned, so a script calling this with workers != 1 needs the usual
            ``if __name__ == "__main__":`` guard.
        threads: torch CPU threads per worker (default: cores / workers). With one worker and no
            ``threads``, the small-network experiments run on one thread and Figure 3 on torch's
            default. Other thread counts can change the last digits of the numbers.

    Returns:
        The paths written by `write_report`.

    Resumable: each finished experiment, and each network of the width sweep, is kept under
    ``out/pieces`` (`run_experiment`); rerunning the same command after an interruption continues
    from there (the progress bars' ETA then counts the remaining work only once the reused
    pieces have gone by). Delete ``out/pieces`` to start over.
    """

    from .parallel import default_workers, run_jobs

    jobs = tuple(e for e in EXPERIMENTS if e in only)
    if set(only) - set(EXPERIMENTS) or not jobs:
        raise ValueError(f"only must name some of {EXPERIMENTS}; got {only!r}.")
    workers = default_workers(len(jobs)) if workers is None else workers
    if workers < 1 or (threads is not None and threads < 1):
        raise ValueError(f"workers and threads must be positive integers; got {workers!r} and {threads!r}.")
    out = Path(out)
    check_replaceable(out, REPORT_FILES)  # before the work, not after it
    out.mkdir(parents=True, exist_ok=True)
    progress = progress or Silent()
    if workers == 1:
        results = {}
        for name in jobs:
            with cpu_threads(threads if threads is not None else None if name in LARGE else 1):
                results[name] = run_experiment(name, settings, seed, out, progress)
    else:
        per_worker = threads if threads is not None else max(1, (os.cpu_count() or 1) // workers)
        ordered = [name for name in LONGEST_FIRST if name in jobs]
        pool = {name: (run_experiment, (name, settings, seed, str(out))) for name in ordered}
        split = "fig3" in pool
        if split:
            # Figure 3's networks are most of a full run (a width-10,000 depth-5 network takes well over
            # an hour on one core): one job per network trains them side by side into the pieces, and
            # the section is assembled below. Widest and deepest first, the rest after the other
            # experiments, so that the long jobs start at once and the short ones fill the gaps.
            from .fig3_pca import train_fig3_network

            del pool["fig3"]
            store = str(out / PIECES / "fig3")
            fig3 = settings.fig3
            widest = max(fig3.widths)
            networks = sorted(((d, w, t) for d in fig3.depths for w in fig3.widths for t in range(fig3.trials)),
                              key=lambda n: (-n[1], -n[0], n[2]))
            jobs_of = {n: (f"fig3-depth{n[0]}-width{n[1]}-trial{n[2]}", (train_fig3_network, (fig3, seed, store, *n)))
                       for n in networks}
            pool = {**dict(job for n, job in jobs_of.items() if n[1] == widest), **pool,
                    **dict(job for n, job in jobs_of.items() if n[1] != widest)}
        results = run_jobs(pool, workers, per_worker, progress)
        if split:
            with cpu_threads(per_worker):
                results["fig3"] = run_experiment("fig3", settings, seed, out, progress)
    sections = [section for name in jobs for section in results[name]]
    intro = [
        "Finite networks beside the infinite-width theory of Jacot, Gabriel and Hongler (2018): the three "
        "experiments of the paper's Section 6, then the appendix's statements measured over a sweep of widths. Every "
        "number in this report was measured by this run; each claim says whether the run bears it out, and by "
        "which criterion.",
        "Conventions (torchntk's docs/conventions.md): NTK parameterization, parameters iid N(0, 1); depth counts "
        "dense layers; "
        "cost C = (1/2N) Σ|f(x_i) − y_i|² and time t = learning rate × steps; the operator norm of a kernel on N "
        "points is the top |eigenvalue| of its Gram matrix divided by N.",
    ]
    if settings.mode == "smoke":
        intro.append("Smoke run: tiny networks and a few seeds, to check that everything runs. Its numbers are far "
                     "from the infinite-width regime and are not meant to bear the theory out.")
    if settings.mode == "quick":
        intro.append("Quick mode: narrower widest networks and shorter runs than the paper where that saves time, so "
                     "that the run takes minutes on a laptop CPU; each section says what it changed. "
                     "`torchntk reproduce --full` runs the paper's settings (hours on a CPU).")
    return write_report(sections, out, title="torchntk: the paper's claims on finite networks",
                        meta=_meta(settings.mode, seed), intro=intro, settings=asdict(settings))


def study(settings: SweepSettings, data: Dataset, seed: int, out: str | Path,
          progress: ProgressLike | None = None, threads: int | None = None) -> dict[str, Path]:
    """The appendix's measurements (Proposition 1, Theorems 1 and 2, Lemma 1) for any network
    description, widths, seeds, data set, learning rate and steps; same report format.
    ``threads``: torch CPU threads (None: torch's default)."""
    from .theorems import analyse_sweep
    from .width_sweep import measure_sweep

    out = Path(out)
    check_replaceable(out, REPORT_FILES)  # before the work, not after it
    out.mkdir(parents=True, exist_ok=True)
    from .linearization import linearization_section, measure_gaps

    with cpu_threads(threads):
        measured = measure_sweep(settings, data, seed, progress or Silent(), "Width sweep")
        gaps = measure_gaps(settings, data, seed, progress or Silent(), "Linearisation gap")
    sections = [*analyse_sweep(measured, settings, data, seed, out), linearization_section(gaps, settings, data, out)]
    intro = [f"The appendix's statements for {settings.network.describe()} networks on {data.source}, measured "
             "over a sweep of widths. Every number was measured by this run; each claim says whether the run bears "
             "it out, and by which criterion."]
    return write_report(sections, out, title="torchntk study: the NTK theorems on finite networks",
                        meta=_meta("study", seed), intro=intro, settings=asdict(settings))

