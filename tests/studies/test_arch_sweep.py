"""Width sweeps of architectures (``torchntk study --spec``): Theorem 1 and Proposition 1 at
initialisation measured on a CNN, and the parts that do not apply refused clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import torchntk as tn
from torchntk.cli import main
from torchntk.studies.arch_sweep import measure_arch_sweep

CNN = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())


def test_cnn_distances_fall_with_width():
    x = np.random.default_rng(0).normal(size=(3, 1, 3, 3))
    sweep = measure_arch_sweep(CNN, x, (16, 64, 256, 1024), seeds=3, seed=0)
    assert sweep.ntk_init.shape == (4, 3) and sweep.conditional.shape == (4, 3)
    # Over a 64x range of widths a n^-1/2 law shrinks the distances 8x; the mean over seeds must
    # at least halve from the narrowest to the widest (a loose, seed-robust check of the direction),
    # and the fitted 95% interval must exclude 0 (the verdict is the fitting code's rule, tested in
    # tests/studies/test_rates.py).
    for series in (sweep.ntk_init, sweep.conditional):
        assert series[-1].mean() < 0.5 * series[0].mean()
    for fit in (sweep.theorem1, sweep.proposition1):
        assert fit.high < 0, fit.describe()


def test_proposition1_needs_a_dense_readout_and_outputs_need_a_readout():
    pooled = tn.serial(tn.Conv(3, padding="same"), tn.ReLU(), tn.Conv(1), tn.GlobalAvgPool())  # last layer: a pool
    x = np.random.default_rng(1).normal(size=(2, 1, 4))
    sweep = measure_arch_sweep(pooled, x, (8, 16, 32), seeds=2, seed=0)
    assert sweep.conditional is None and sweep.proposition1 is None and sweep.theorem1.points == 6
    with pytest.raises(ValueError, match="end it with a readout"):
        measure_arch_sweep(tn.serial(tn.Conv(3, padding="same"), tn.ReLU(), tn.Conv(1)), x, (8, 16, 32), 2, 0)


def test_study_command_with_a_spec(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(2).normal(size=(3, 1, 3, 3)))
    (tmp_path / "cnn.json").write_text(json.dumps(CNN.to_dict()))
    result = CliRunner().invoke(main, ["study", "--spec", str(tmp_path / "cnn.json"), "--data", str(tmp_path / "x.npy"),
                                       "--widths", "8,16,32", "--seeds", "2", "--out", str(tmp_path / "out"),
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["input_shape"] == [1, 3, 3] and len(saved["ntk_init"]) == 3
    assert "Theorem 1" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize(("extra", "match"), [
    (["--steps", "10"], "--steps belong to the training"),
    (["--depth", "3"], "leave out --depth"),
    (["--data", "circle"], "holds vectors"),
])
def test_study_refuses_what_does_not_apply(tmp_path, extra, match):
    (tmp_path / "cnn.json").write_text(json.dumps(CNN.to_dict()))
    args = ["study", "--spec", str(tmp_path / "cnn.json"), "--data", "digits", "--out", str(tmp_path / "o"), *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert match in " ".join(result.stderr.split()), result.stderr
