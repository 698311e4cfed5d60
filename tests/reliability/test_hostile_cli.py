"""Class 1: the command line never leaks a traceback. Output paths are checked before any long
work; suffixes are compared case-insensitively and the file is written under exactly the given
name; every failure is one ``Error:`` line naming the file or option and what to do."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import torchntk as tn
import torchntk.cli  # noqa: F401 -- registers the commands

# The package attributes `kernel` and `fit` are the click commands; the modules are these.
kernel_module = sys.modules["torchntk.cli.kernel"]
fit_module = sys.modules["torchntk.cli.fit"]


@pytest.fixture
def never_compute(monkeypatch):
    """Fail loudly if a command reaches the kernel computation: the path check must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the kernel was computed before the output path was checked")
    monkeypatch.setattr(kernel_module, "blocked_kernels", refuse)
    monkeypatch.setattr(fit_module, "blocked_kernels", refuse)


@pytest.mark.parametrize("command", [
    ["kernel", "{data}", "-o", "{missing}/K.npy"],
    ["kernel", "{data}", "-o", "{file}/K.npy"],               # a "folder" that is a file
    ["kernel", "{data}", "-o", "{tmp}"],                        # a folder given as the output file
    ["fit", "{data}", "--target", "y", "-o", "{file}"],        # a model directory that is a file
    ["fit", "{data}", "--target", "y", "-o", "{file}/sub"],
    ["predict", "{model}", "{data}", "-o", "{missing}/p.csv"],
    ["study", "--out", "{file}/report", "--quiet"],
    ["reproduce", "--smoke", "--out", "{file}/report", "--quiet"],
])
def test_unwritable_outputs_are_refused_before_the_work(cli, table, tmp_path, never_compute, command):
    data, _ = table
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder")
    model = tmp_path / "model"
    model.mkdir()
    names = {"data": data, "missing": tmp_path / "no" / "such", "file": notes, "tmp": tmp_path, "model": model}
    args = [part.format(**names) for part in command]
    option = "--out" if "--out" in args else "--output"
    cli.error(*args, match=option)


def test_predict_checks_its_output_before_loading(cli, table, tmp_path):
    data, _ = table
    cli.ok("fit", data, "--target", "y", "-o", tmp_path / "m", "-q")
    cli.error("predict", tmp_path / "m", data, "-o", tmp_path / "no" / "p.csv", match=("-o/--output", "does not exist"))


@pytest.mark.parametrize("name", ["K.NPY", "K.Npz", "K.CSV"])
def test_capital_suffixes_write_exactly_the_given_name(cli, table, tmp_path, name):
    data, values = table
    out = tmp_path / name
    cli.ok("kernel", data, "--drop", "y", "--kind", "both" if name.lower().endswith("npz") else "ntk", "-o", out, "-q",
           "--no-standardize")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["train.csv", name])
    expected = tn.mlp(3, bias_std=0.1).ntk(values[:, :3])
    suffix = name.lower()[-3:]
    if suffix == "npy":
        got = np.load(open(out, "rb"))
    elif suffix == "npz":
        got = np.load(open(out, "rb"))["ntk"]
    else:
        got = np.loadtxt(out, delimiter=",")
    # The same library call on the same numbers; CSV keeps 17 significant digits: exact round trip.
    np.testing.assert_array_equal(got, expected)


def test_unreadable_model_file_is_one_error(cli, table, tmp_path, monkeypatch):
    data, _ = table
    cli.ok("fit", data, "--target", "y", "-o", tmp_path / "m", "-q")
    # The tests may run as root (who reads everything), so simulate the permission error.
    import torchntk._json as json_module

    real_open = open

    def denied(path, *args, **kwargs):
        if str(path).endswith("model.json"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(json_module, "open", denied, raising=False)
    cli.error("predict", tmp_path / "m", data, match=("model.json", "Permission denied"))


def test_unexpected_failures_are_one_line_too(cli, table, tmp_path, monkeypatch):
    data, _ = table

    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(kernel_module, "blocked_kernels", broken)
    cli.error("kernel", data, "-o", tmp_path / "K.npy", "-q", match=("unexpected failure", "KeyError"))


@pytest.mark.parametrize("args,match", [
    (["--depth", "100000000000000000000"], "--depth"),
    (["--depth", "0"], "--depth"),
    (["--bias-std", "1e200"], "bias_std"),
    (["--weight-std", "1e160"], "weight_std"),
    (["--bias-std", "nan"], "bias"),
])
def test_absurd_network_options_are_one_error(cli, table, tmp_path, never_compute, args, match):
    data, _ = table
    cli.error("kernel", data, *args, "-o", tmp_path / "K.npy", match=match)
