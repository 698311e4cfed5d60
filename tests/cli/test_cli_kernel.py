"""``torchntk kernel``: the file it writes holds the library's kernels; bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_runner import assert_one_line_error, run

import torchntk as tn
from torchntk.cli.kernel import blocked_kernels
from torchntk.model_io import KernelModel


@pytest.fixture
def x(tmp_path):
    data = np.random.default_rng(1).normal(size=(9, 4))
    np.save(tmp_path / "x.npy", data)
    return data


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("tile", [1, 4, 100, None])
def test_blocked_kernels_equal_one_call(symmetric, tile):
    rng = np.random.default_rng(0)
    x1 = torch.from_numpy(rng.normal(size=(10, 3)))
    x2 = None if symmetric else torch.from_numpy(rng.normal(size=(7, 3)))
    spec = tn.mlp(4, "relu", bias_std=0.2)
    nngp, ntk = spec.kernels(x1, x2)
    out = blocked_kernels(spec, x1, x2, tile=tile)
    # Each block is the same recursion on the same float64 numbers; only GEMM blocking can
    # reorder sums, so entries agree to a few ulps.
    torch.testing.assert_close(out["nngp"], nngp, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(out["ntk"], ntk, rtol=1e-13, atol=1e-14)
    if symmetric:
        assert torch.equal(out["ntk"], out["ntk"].T)


class _Bar:
    """Records what `blocked_kernels` tells a progress bar."""

    def __init__(self):
        self.total, self.advances = None, []

    def add_task(self, description, total):
        self.total = total
        return 0

    def advance(self, task, size):
        self.advances.append(size)


@pytest.mark.parametrize("symmetric", [True, False])
def test_progress_moves_within_one_tile(symmetric):
    # 40 images of 4 x 4 pixels through a pooling CNN fit in one tile of a single call; the bar
    # must still move many times, and end exactly at its total.
    rng = np.random.default_rng(2)
    x1 = torch.from_numpy(rng.normal(size=(40, 1, 4, 4)))
    x2 = None if symmetric else torch.from_numpy(rng.normal(size=(6, 1, 4, 4)))
    spec = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    bar = _Bar()
    out = blocked_kernels(spec, x1, x2, tile=512, progress=bar)
    rows = bar.advances[0] // (40 if symmetric else 6)
    # Each step counts its block of rows against itself and the later rows (symmetric), or all columns.
    entries = sum(rows * (40 - start) for start in range(0, 40, rows)) if symmetric else 40 * 6
    assert len(bar.advances) >= 16 and sum(bar.advances) == bar.total == entries
    nngp, ntk = spec.kernels(x1, x2)
    torch.testing.assert_close(out["ntk"], ntk, rtol=1e-13, atol=1e-14)  # as above: only GEMM order differs
    if symmetric:
        assert torch.equal(out["ntk"], out["ntk"].T) and torch.equal(out["nngp"], out["nngp"].T)


def test_steps_of_whole_tiles_are_the_one_calls_bits():
    # With many tiles, every step computes the very tiles that one call computes: the same bits.
    x = torch.from_numpy(np.random.default_rng(4).normal(size=(70, 3)))
    spec = tn.mlp(3, "erf")
    bar = _Bar()
    out = blocked_kernels(spec, x, tile=2, progress=bar)
    nngp, ntk = spec.kernels(x, tile=2)
    assert torch.equal(out["nngp"], nngp) and torch.equal(out["ntk"], ntk)
    assert len(bar.advances) == 35 and sum(bar.advances) == bar.total == sum(2 * (70 - s) for s in range(0, 70, 2))


def test_kernel_command_writes_the_ntk(tmp_path, x):
    result = run("kernel", "--no-standardize", tmp_path / "x.npy", "--depth", 4, "--activation", "relu",
                 "--bias-std", 0.1, "--kind", "ntk", "-o", tmp_path / "K.npy", "--tile", 4)
    assert result.exit_code == 0, result.output
    want = tn.mlp(4, "relu", bias_std=0.1).ntk(x)
    np.testing.assert_allclose(np.load(tmp_path / "K.npy"), want, rtol=1e-13, atol=1e-14)  # as above


def test_kernel_command_both_kinds_cross_and_csv(tmp_path, x):
    header = "a,b,c,d,y"
    data = np.column_stack([x, np.arange(9.0)])
    np.savetxt(tmp_path / "train.csv", data, delimiter=",", header=header, comments="")
    np.savetxt(tmp_path / "test.csv", data[:3], delimiter=",", header=header, comments="")
    result = run("kernel", "--no-standardize", tmp_path / "train.csv", tmp_path / "test.csv", "--drop", "y",
                 "--kind", "both", "--activation", "erf", "--depth", 2, "--weight-std", 1.5, "-o", tmp_path / "K.npz")
    assert result.exit_code == 0, result.output
    nngp, ntk = tn.mlp(2, "erf", weight_std=1.5).kernels(x, x[:3])
    with np.load(tmp_path / "K.npz") as out:
        # The CSV inputs were written with savetxt's %.18e, which keeps every float64 digit.
        np.testing.assert_allclose(out["nngp"], nngp, rtol=1e-13)
        np.testing.assert_allclose(out["ntk"], ntk, rtol=1e-13)


def test_standardize_and_csv_output(tmp_path, x):
    result = run("kernel", tmp_path / "x.npy", "--kind", "nngp", "-o", tmp_path / "K.csv")
    assert result.exit_code == 0, result.output
    xs = (x - x.mean(0)) / x.std(0)
    # The CSV is written with 17 significant digits, enough to round-trip float64.
    np.testing.assert_allclose(np.loadtxt(tmp_path / "K.csv", delimiter=","), tn.mlp(3).nngp(xs), rtol=1e-13)


def test_every_command_has_help():
    for command in ("kernel", "fit", "predict"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output and "--help" in result.output


def test_kernel_errors_are_one_line(tmp_path, x):
    assert_one_line_error(run("kernel", tmp_path / "x.npy", "--kind", "both", "-o", tmp_path / "K.npy"),
                          "--kind both", code=2)
    np.save(tmp_path / "other.npy", np.ones((2, 5)))
    assert_one_line_error(run("kernel", tmp_path / "x.npy", tmp_path / "other.npy", "-o", tmp_path / "K.npy"),
                          "4 feature columns")
    (tmp_path / "t.csv").write_text("a,b\n1,oops\n")
    assert_one_line_error(run("kernel", tmp_path / "t.csv", "-o", tmp_path / "K.npy"), "not numeric")
    result = run("kernel", tmp_path / "missing.npy", "-o", tmp_path / "K.npy")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert_one_line_error(run("kernel", tmp_path / "x.npy", "--depth", 0, "-o", tmp_path / "K.npy"),
                          "--depth", code=2)


def test_kernel_is_the_fitted_models_training_kernel_and_names_its_columns(tmp_path, x):
    # Same file, same network, both defaults: `kernel` standardises as `fit` does.
    data = np.column_stack([x * [1, 10, 100, 1000], np.arange(9.0)])
    np.savetxt(tmp_path / "t.csv", data, delimiter=",", header="a,b,c,d,price", comments="")
    result = run("kernel", tmp_path / "t.csv", "--drop", "price", "--kind", "both", "-o", tmp_path / "K.npz")
    assert result.exit_code == 0, result.output
    assert "9 rows of 4 feature columns: a, b, c, d, standardised" in result.stderr
    assert run("fit", tmp_path / "t.csv", "--target", "price", "--ridge", 0, "-o", tmp_path / "m", "-q").exit_code == 0
    model = KernelModel.load(tmp_path / "m")
    with np.load(tmp_path / "K.npz") as k:
        # The same tiles on the same standardised numbers: the NNGP matrix is stored as computed.
        np.testing.assert_array_equal(k["nngp"], model.nngp_train)
        # The NTK is stored as its eigendecomposition: V diag(l) V^T rebuilds it to ~N eps |K|.
        rebuilt = (model.eigenvectors * model.eigenvalues) @ model.eigenvectors.T
        np.testing.assert_allclose(rebuilt, k["ntk"], rtol=0, atol=1e-12 * np.abs(k["ntk"]).max())
    # Forgetting --drop is visible: the target is named among the features.
    result = run("kernel", tmp_path / "t.csv", "-o", tmp_path / "K.npy")
    assert "5 feature columns: a, b, c, d, price" in result.stderr


def test_flat_rows_for_a_conv_network_suggest_the_input_shape(tmp_path):
    np.savetxt(tmp_path / "px.csv", np.ones((3, 64)), delimiter=",", header=",".join(f"p{i}" for i in range(64)),
               comments="")
    (tmp_path / "cnn.json").write_text(json.dumps(tn.serial(tn.Conv((3, 3)), tn.ReLU(), tn.Flatten(),
                                                            tn.Dense()).to_dict()))
    assert_one_line_error(run("kernel", tmp_path / "px.csv", "--spec", tmp_path / "cnn.json", "-o", tmp_path / "K.npy"),
                          "give --input-shape 1,8,8")
