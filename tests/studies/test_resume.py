"""Resumable runs: every finished piece is kept on disk, and a rerun continues where an
interrupted one stopped, with the same numbers as an uninterrupted run."""

import json

import numpy as np
import pytest

import torchntk.training
from torchntk.studies import runner
from torchntk.studies.config import NetworkSettings, SweepSettings, smoke_settings
from torchntk.studies.data import unit_circle
from torchntk.studies.width_sweep import _TRAINED, measure_sweep

SETTINGS = SweepSettings(network=NetworkSettings(depth=2), widths=(8, 16, 32), seeds=2, gaussian_seeds=4,
                         out_features=2, points=4, steps=2, record_every=1)
FIELDS = ("outputs", "variances", *_TRAINED)


class _Interrupt(Exception):
    pass


class _StopAfter:
    """A progress object that interrupts the run after ``limit`` units (like Ctrl-C mid-sweep)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit, self.done = limit, 0

    def task(self, description, total):
        return self

    def advance(self, steps=1):
        self.done += steps
        if self.limit is not None and self.done >= self.limit:
            raise _Interrupt


@pytest.fixture()
def count_training(monkeypatch):
    calls = []
    real = torchntk.training.train

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torchntk.training, "train", counted)
    return calls


def test_an_interrupted_sweep_continues_and_gives_the_uninterrupted_numbers(tmp_path, count_training):
    data = unit_circle(SETTINGS.points)
    whole = measure_sweep(SETTINGS, data, seed=1)
    trained_total = len(SETTINGS.widths) * SETTINGS.seeds
    count_training.clear()
    # 12 progress units per width (4 networks, 2 of them trained: 1 + 4 units each): the run
    # stops right after the second width's first trained network is saved.
    with pytest.raises(_Interrupt):
        measure_sweep(SETTINGS, data, seed=1, progress=_StopAfter(limit=17), store=tmp_path)
    finished = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert finished == ["width16-net0.npz", "width8-net0.npz", "width8-net1.npz", "width8-net2.npz",
                        "width8-net3.npz"]
    assert not list(tmp_path.glob("*.partial*"))  # every piece on disk is whole
    assert len(count_training) == 3
    count_training.clear()
    resumed = measure_sweep(SETTINGS, data, seed=1, store=tmp_path)
    assert len(count_training) == trained_total - 3  # only the networks missing from disk were trained
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name), err_msg=name)


def test_pieces_of_other_settings_or_seeds_are_not_reused(tmp_path, count_training):
    data = unit_circle(SETTINGS.points)
    measure_sweep(SETTINGS, data, seed=1, store=tmp_path)
    count_training.clear()
    measure_sweep(SETTINGS, data, seed=2, store=tmp_path)
    assert len(count_training) == len(SETTINGS.widths) * SETTINGS.seeds
    count_training.clear()
    measure_sweep(SETTINGS, data, seed=2, store=tmp_path)  # now all of seed 2's are on disk
    assert count_training == []


def test_a_torn_piece_is_recomputed(tmp_path, count_training):
    data = unit_circle(SETTINGS.points)
    whole = measure_sweep(SETTINGS, data, seed=1, store=tmp_path)
    (tmp_path / "width16-net1.npz").write_bytes(b"not an npz")
    count_training.clear()
    again = measure_sweep(SETTINGS, data, seed=1, store=tmp_path)
    assert len(count_training) == 1
    np.testing.assert_array_equal(again.ntk_move, whole.ntk_move)


def test_a_finished_experiment_is_not_run_again(tmp_path, monkeypatch):
    settings = smoke_settings()
    first = runner.run_experiment("fig2", settings, 0, tmp_path)
    saved = json.loads((tmp_path / "pieces" / "fig2.json").read_text())
    assert len(saved["sections"]) == len(first)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the finished experiment was run again")

    monkeypatch.setattr(runner, "_run_experiment", must_not_run)
    again = runner.run_experiment("fig2", settings, 0, tmp_path)
    assert [s.as_dict() for s in again] == [s.as_dict() for s in first]
    # Another seed is another run: it is not taken from the cache.
    with pytest.raises(AssertionError, match="run again"):
        runner.run_experiment("fig2", settings, 1, tmp_path)


@pytest.mark.parametrize("figure", ["fig1", "fig3"])
def test_an_interrupted_figure_continues_and_gives_the_uninterrupted_numbers(tmp_path, count_training, figure):
    """Figures 1 and 3 keep each trained network (at the paper's width 10,000 one takes up to an
    hour): a run stopped after its first trained network trains only the others on the rerun,
    and its section equals an uninterrupted run's."""
    from torchntk.studies.fig1_ntk import run_fig1
    from torchntk.studies.fig3_pca import run_fig3

    smoke = smoke_settings()
    run, settings = (run_fig1, smoke.fig1) if figure == "fig1" else (run_fig3, smoke.fig3)
    whole = run(settings, 0, tmp_path / "whole")
    total = len(count_training)
    count_training.clear()
    # Figure 1 advances 1 unit per draw and 5 more per trained one; Figure 3 1 per trained network.
    with pytest.raises(_Interrupt):
        run(settings, 0, tmp_path / "cut", progress=_StopAfter(limit=6 if figure == "fig1" else 1),
            store=tmp_path / "pieces")
    assert len(count_training) == 1 and len(list((tmp_path / "pieces").glob("*.npz"))) == 1
    count_training.clear()
    resumed = run(settings, 0, tmp_path / "cut", store=tmp_path / "pieces")
    assert len(count_training) == total - 1
    assert resumed.claims == whole.claims
    np.testing.assert_equal(resumed.numbers, whole.numbers)


def test_figure_3_split_by_network_across_workers_gives_the_serial_section(tmp_path):
    """With several workers, reproduce trains Figure 3's networks one job per network into the pieces
    and assembles the section from them: the same claims and numbers as one process running it,
    and every network kept."""
    settings = smoke_settings()
    assert len(settings.fig3.depths) > 1
    with runner.cpu_threads(1):  # the workers' thread count: the same float32 arithmetic, bit for bit
        serial = runner.run_experiment("fig3", settings, 0, tmp_path / "serial")
    runner.reproduce(settings, 0, tmp_path / "parallel", only=("fig3",), workers=2, threads=1)
    fig3 = settings.fig3
    kept = sorted(p.name for p in (tmp_path / "parallel" / "pieces" / "fig3").glob("*.npz"))
    assert len(kept) == len(fig3.depths) * len(fig3.widths) * fig3.trials
    saved = json.loads((tmp_path / "parallel" / "pieces" / "fig3.json").read_text())["sections"]
    assert [s.as_dict() for s in serial] == saved


def test_figure_3_network_jobs_name_networks_of_the_settings(tmp_path):
    from torchntk.studies.fig3_pca import train_fig3_network

    fig3 = smoke_settings().fig3
    d, w = fig3.depths[0], fig3.widths[0]
    for depth, width, trial in ((d, w, fig3.trials), (max(fig3.depths) + 1, w, 0), (d, max(fig3.widths) + 1, 0)):
        with pytest.raises(ValueError, match="must come from the settings"):
            train_fig3_network(fig3, 0, tmp_path, depth, width, trial)
    assert not list(tmp_path.glob("*.npz"))


def test_figure_3_widest_networks_are_submitted_first(tmp_path, monkeypatch):
    """The width-10,000 networks (an hour each on one core) start at once, deepest first; the
    narrow ones fill the gaps after the other experiments."""
    from torchntk.studies import parallel
    from torchntk.studies.config import full_settings

    submitted = []

    def record(pool, workers, threads, progress):
        submitted.extend(pool)
        raise _Interrupt

    monkeypatch.setattr(parallel, "run_jobs", record)
    with pytest.raises(_Interrupt):
        runner.reproduce(full_settings(), 0, tmp_path, workers=2)
    widest = [f"fig3-depth{d}-width10000-trial{t}" for d in (5, 4) for t in (0, 1)]
    assert submitted[:4] == widest and submitted[4:7] == ["fig1", "sweep", "fig2"]
    assert len(submitted) == 7 + 8 and all(name.startswith("fig3-") for name in submitted[7:])
