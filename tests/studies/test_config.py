"""Settings: seeds derived without collisions; quick and full sweeps meet the issue's minimum."""

import pytest

from torchntk.studies.config import derive_seed, full_settings, quick_settings, smoke_settings


def test_derived_seeds_are_reproducible_and_distinct():
    assert derive_seed(0, "fig1", 500, 3) == derive_seed(0, "fig1", 500, 3)
    labels = [("fig1-data",), ("fig1-bootstrap",), ("fig1",), ("fig1", 500, 0), ("fig1", 500, 1), ("fig1", 5000, 0),
              ("sweep", 64, 0), ("sweep-data",), ("sweep", 640)]
    seeds = {derive_seed(0, *label) for label in labels} | {derive_seed(1, *label) for label in labels}
    assert len(seeds) == 2 * len(labels)
    assert all(0 <= s < 2**32 for s in seeds)


@pytest.mark.parametrize("settings", [quick_settings(), full_settings()])
def test_sweeps_span_a_factor_of_16_with_at_least_4_widths_and_several_seeds(settings):
    widths = settings.sweep.widths
    assert len(widths) >= 4 and max(widths) / min(widths) >= 16 and settings.sweep.seeds >= 5


def test_full_settings_are_the_papers():
    full = full_settings()
    assert full.fig1.widths == (500, 10_000) and full.fig1.inits == 10 and full.fig1.steps == 200
    assert full.fig2.widths == (50, 1_000) and full.fig2.steps == 1_000 and full.fig2.inits == 10
    assert full.fig3.widths == (100, 1_000, 10_000) and full.fig3.points == 512 and full.fig3.depths == (4, 5)
    assert smoke_settings().mode == "smoke" and quick_settings().mode == "quick"
