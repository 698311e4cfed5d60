"""``torchntk fit`` / ``torchntk predict`` on a user's table: the predictions are the library's,
the saved model is its own plain-data format, and every user error is one line."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from cli_runner import assert_one_line_error, run

from torchntk.model_io import KernelModel, ModelSettings


def write_csv(path, header, rows):
    np.savetxt(path, rows, delimiter=",", header=",".join(header), comments="")
    return path


@pytest.fixture
def tables(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20, 3)) * [1, 10, 100] + [0, 50, -20]
    y = 200 + 30 * np.sin(x[:, 0]) + x[:, 1]
    write_csv(tmp_path / "train.csv", ["a", "b", "c", "price"], np.column_stack([x[:15], y[:15]]))
    # Test columns in another order, without the target: they are matched by name.
    write_csv(tmp_path / "test.csv", ["c", "a", "b"], x[15:][:, [2, 0, 1]])
    return x, y


def read_predictions(path_or_text):
    text = path_or_text.read_text() if hasattr(path_or_text, "read_text") else path_or_text
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], np.array(rows[1:], dtype=float)


def test_fit_then_predict_gives_the_models_predictions(tmp_path, tables):
    x, y = tables
    result = run("fit", tmp_path / "train.csv", "--target", "price", "--depth", 3, "--kernel", "ntk",
                 "--time", "inf", "-o", tmp_path / "model")
    assert result.exit_code == 0, result.output
    result = run("predict", tmp_path / "model", tmp_path / "test.csv", "-o", tmp_path / "pred.csv")
    assert result.exit_code == 0, result.output
    header, values = read_predictions(tmp_path / "pred.csv")
    assert header == ["mean", "std"]
    want_mean, want_std = KernelModel.fit(x[:15], y[:15], ModelSettings.mlp(depth=3, kernel="ntk"), standardize_x=True,
                                          standardize_y=True).predict(x[15:])
    # The CSV keeps 12 significant digits.
    np.testing.assert_allclose(values[:, 0], want_mean[:, 0], rtol=1e-10)
    np.testing.assert_allclose(values[:, 1], want_std[:, 0], rtol=1e-10, atol=1e-10)
    assert np.all(values[:, 1] > 0)  # test points are not training points: the networks disagree there


def test_predict_on_training_rows_reproduces_targets(tmp_path, tables):
    _, y = tables
    run("fit", tmp_path / "train.csv", "--target", "price", "--ridge", 0, "-o", tmp_path / "model")
    result = run("predict", tmp_path / "model", tmp_path / "train.csv")  # the target column is ignored
    assert result.exit_code == 0, result.output
    _, values = read_predictions(result.stdout)
    # At t = inf without ridge the trained network interpolates: the training kernel's condition
    # number here is ~2e2, so the solve is good to ~1e-13 relative; the CSV keeps 12 digits.
    np.testing.assert_allclose(values[:, 0], y[:15], rtol=1e-10)
    # The variance there is 0 in exact arithmetic; it is a difference of O(1) terms, so rounding
    # leaves ~cond * eps ~ 1e-13 (standardised units), i.e. a std below ~1e-6 of the target's scale.
    assert np.all(values[:, 1] < 1e-5 * y.std())


def test_nngp_kernel_finite_time_and_predict_time_override(tmp_path, tables):
    x, y = tables
    run("fit", tmp_path / "train.csv", "--target", "price", "--kernel", "nngp", "--time", 2, "--activation", "erf",
        "--no-standardize", "-o", tmp_path / "model")
    model = KernelModel.fit(x[:15], y[:15], ModelSettings.mlp(kernel="nngp", time=2.0, activation="erf"))
    for extra, t in (((), 2.0), (("--time", "0.5"), 0.5)):
        result = run("predict", tmp_path / "model", tmp_path / "test.csv", *extra)
        assert result.exit_code == 0, result.output
        _, values = read_predictions(result.stdout)
        mean, std = model.predict(x[15:], time=t)
        np.testing.assert_allclose(values, np.column_stack([mean, std]), rtol=1e-10)  # 12 printed digits


def test_several_targets_from_npz(tmp_path, tables):
    x, y = tables
    targets = np.column_stack([y, -y])
    np.savez(tmp_path / "train.npz", x=x[:15], y=targets[:15])
    result = run("fit", tmp_path / "train.npz", "--target", "y", "-o", tmp_path / "model")
    assert result.exit_code == 0, result.output
    np.save(tmp_path / "test.npy", x[15:])
    result = run("predict", tmp_path / "model", tmp_path / "test.npy")
    assert result.exit_code == 0, result.output
    header, values = read_predictions(result.stdout)
    assert header == ["mean_y_0", "mean_y_1", "std_y_0", "std_y_1"]
    # Targets y and -y are standardised to exact negatives, so the means are too, and the stds equal.
    np.testing.assert_allclose(values[:, 0], -values[:, 1], rtol=1e-10)
    np.testing.assert_allclose(values[:, 2], values[:, 3], rtol=1e-10)


def test_user_errors_are_one_line(tmp_path, tables):
    x, _ = tables
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    assert_one_line_error(run("fit", train, "--target", "cost", "-o", tmp_path / "m"), "no column named 'cost'")
    (tmp_path / "empty.csv").write_text("")
    assert_one_line_error(run("fit", tmp_path / "empty.csv", "--target", "price", "-o", tmp_path / "m"), "empty")
    (tmp_path / "hole.csv").write_text("a,b,price\n1,,3\n")
    assert_one_line_error(run("fit", tmp_path / "hole.csv", "--target", "price", "-o", tmp_path / "m"),
                          "missing value")
    (tmp_path / "words.csv").write_text("a,city,price\n1,Paris,3\n")
    assert_one_line_error(run("fit", tmp_path / "words.csv", "--target", "price", "-o", tmp_path / "m"),
                          "not numeric")
    assert run("fit", train, "--target", "price", "-o", tmp_path / "m").exit_code == 0
    write_csv(tmp_path / "other.csv", ["a", "b", "z"], x[15:])
    assert_one_line_error(run("predict", tmp_path / "m", tmp_path / "other.csv"), "do not match")
    assert_one_line_error(run("predict", tmp_path, test), "not a torchntk model")
    assert_one_line_error(run("predict", tmp_path / "m", test, "-o", tmp_path / "p.txt"), ".csv", code=2)
    assert_one_line_error(run("fit", train, "--target", "price", "--time", "-1", "-o", tmp_path / "m"),
                          "--time", code=2)
    # torchntk's own ValueError (duplicate rows make the t = inf limit singular without ridge).
    rows = np.column_stack([np.vstack([x[:5], x[:5]]), np.arange(10.0)])
    write_csv(tmp_path / "dup.csv", ["a", "b", "c", "price"], rows)
    assert_one_line_error(run("fit", tmp_path / "dup.csv", "--target", "price", "--ridge", 0, "-o", tmp_path / "d"),
                          "singular")


def test_fit_refuses_to_write_into_a_foreign_directory(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("...")
    write_csv(tmp_path / "t.csv", ["a", "y"], np.arange(6.0).reshape(3, 2))
    assert_one_line_error(run("fit", tmp_path / "t.csv", "--target", "y", "-o", tmp_path / "docs"),
                          "not a torchntk model")


def test_fit_and_predict_print_one_summary_line_unless_quiet(tmp_path, tables):
    result = run("fit", tmp_path / "train.csv", "--target", "price", "-o", tmp_path / "model")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (f"fitted ntk regression of price on 15 rows of 3 feature columns: a, b, c; "
                                     f"saved to {tmp_path / 'model'}")
    result = run("predict", tmp_path / "model", tmp_path / "test.csv", "-o", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (f"predicted 5 rows of 3 feature columns: c, a, b with the ntk regression at "
                                     f"t = inf; wrote {tmp_path / 'p.csv'}")
    result = run("predict", tmp_path / "model", tmp_path / "test.csv", "-q")
    assert result.exit_code == 0 and result.stderr == "" and result.stdout.startswith("mean,std")


def test_predict_into_a_pipe_closed_early_exits_without_an_error_message(tmp_path):
    # `torchntk predict model/ big.csv | head -1`: the reader leaves after one line; a real process
    # and a real pipe, since that is where the broken pipe happens. The predictions of 4,000 rows
    # (~100 kB of CSV) overflow the pipe's buffer, so the write fails once head has gone.
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 2))
    np.savetxt(tmp_path / "train.csv", np.column_stack([x, x[:, 0]]), delimiter=",", header="a,b,y", comments="")
    np.savetxt(tmp_path / "big.csv", rng.standard_normal((4000, 2)), delimiter=",", header="a,b", comments="")
    command = [sys.executable, "-c", "from torchntk.cli import main; main(prog_name='torchntk')"]
    subprocess.run([*command, "fit", "train.csv", "--target", "y", "-o", "model", "--quiet"], cwd=tmp_path,
                   check=True, capture_output=True)
    with subprocess.Popen([*command, "predict", "model", "big.csv", "--quiet"], cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        header = process.stdout.readline()
        process.stdout.close()                    # the reader leaves
        stderr = process.stderr.read().decode()
        process.wait(timeout=120)
    assert header.startswith(b"mean,std")
    assert process.returncode == 141 and stderr == "", (process.returncode, stderr)
