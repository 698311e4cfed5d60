"""``torchntk kernel``: the file it writes holds the library's kernels; bad input is one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_runner import assert_one_line_error, run

import torchntk as tn
from torchntk.cli.kernel import blocked_kernels


@pytest.fixture
def x(tmp_path):
    data = np.random.default_rng(1).normal(size=(9, 4))
    np.save(tmp_path / "x.npy", data)
    return data


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block_rows", [1, 4, 100])
def test_blocked_kernels_equal_one_call(symmetric, block_rows):
    rng = np.random.default_rng(0)
    x1 = torch.from_numpy(rng.normal(size=(10, 3)))
    x2 = None if symmetric else torch.from_numpy(rng.normal(size=(7, 3)))
    spec = tn.mlp(4, "relu", bias_std=0.2)
    nngp, ntk = spec.kernels(x1, x2)
    out = blocked_kernels(spec, x1, x2, block_rows=block_rows)
    # Each block is the same recursion on the same float64 numbers; only GEMM blocking can
    # reorder sums, so entries agree to a few ulps.
    torch.testing.assert_close(out["nngp"], nngp, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(out["ntk"], ntk, rtol=1e-13, atol=1e-14)
    if symmetric:
        assert torch.equal(out["ntk"], out["ntk"].T)


def test_kernel_command_writes_the_ntk(tmp_path, x):
    result = run("kernel", tmp_path / "x.npy", "--depth", 4, "--activation", "relu", "--bias-std", 0.1,
                 "--kind", "ntk", "-o", tmp_path / "K.npy", "--block-rows", 4)
    assert result.exit_code == 0, result.output
    want = tn.mlp(4, "relu", bias_std=0.1).ntk(x)
    np.testing.assert_allclose(np.load(tmp_path / "K.npy"), want, rtol=1e-13, atol=1e-14)  # as above


def test_kernel_command_both_kinds_cross_and_csv(tmp_path, x):
    header = "a,b,c,d,y"
    data = np.column_stack([x, np.arange(9.0)])
    np.savetxt(tmp_path / "train.csv", data, delimiter=",", header=header, comments="")
    np.savetxt(tmp_path / "test.csv", data[:3], delimiter=",", header=header, comments="")
    result = run("kernel", tmp_path / "train.csv", tmp_path / "test.csv", "--drop", "y", "--kind", "both",
                 "--activation", "erf", "--depth", 2, "--weight-std", 1.5, "-o", tmp_path / "K.npz")
    assert result.exit_code == 0, result.output
    nngp, ntk = tn.mlp(2, "erf", weight_std=1.5).kernels(x, x[:3])
    with np.load(tmp_path / "K.npz") as out:
        # The CSV inputs were written with savetxt's %.18e, which keeps every float64 digit.
        np.testing.assert_allclose(out["nngp"], nngp, rtol=1e-13)
        np.testing.assert_allclose(out["ntk"], ntk, rtol=1e-13)


def test_standardize_and_csv_output(tmp_path, x):
    result = run("kernel", tmp_path / "x.npy", "--kind", "nngp", "--standardize", "-o", tmp_path / "K.csv")
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
