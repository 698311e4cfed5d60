"""``torchntk fit`` / ``predict`` as a classifier: integer labels with --classify, text labels
always; labels written back in their own type, scores on request, accuracy in the summaries; a
regression on few distinct integers says how to classify instead."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from cli_runner import assert_one_line_error, run

import torchntk as tn
from torchntk.model_io import KernelModel, ModelSettings

DIGITS_CNN = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.Flatten(), tn.Dense())


def read_rows(text):
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from sklearn.datasets import load_digits

    tmp = tmp_path_factory.mktemp("digits")
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    images, labels = data.images[:, None] / 16.0, data.target  # (1797, 1, 8, 8), ints 0..9
    train, test = order[:200], order[200:300]
    np.savez(tmp / "train.npz", x=images[train], label=labels[train])
    np.savez(tmp / "test.npz", x=images[test], label=labels[test])
    (tmp / "cnn.json").write_text(json.dumps(DIGITS_CNN.to_dict()))
    fitted = run("fit", tmp / "train.npz", "--array", "x", "--target", "label", "--classify", "--spec",
                 tmp / "cnn.json", "-o", tmp / "model")
    return tmp, images[test], labels[test], fitted


def test_digits_end_to_end(digits):
    tmp, x_test, y_test, result = digits
    assert result.exit_code == 0, result.output
    assert "classifier of label (10 classes) on 200 images of shape 1x8x8; training accuracy 100.0 %" in result.stderr
    assert "hint" not in result.stderr
    result = run("predict", tmp / "model", tmp / "test.npz", "--array", "x", "-o", tmp / "labels.csv")
    assert result.exit_code == 0, result.output
    header, rows = read_rows((tmp / "labels.csv").read_text())
    assert header == ["label"] and all(row[0].isdigit() for row in rows)   # ints, not 3.0
    predicted = np.array([int(row[0]) for row in rows])
    accuracy = np.mean(predicted == y_test)
    # Chance is 0.10 with ten classes. Kernel regression on one-hot codes with this CNN and 200
    # training images classifies 0.96 of these 100 held-out digits (regressing on the digit's
    # value and rounding gets about 0.43); 0.85 is far above both, and below 0.96 by far more than
    # a change in the last bits of the kernels could move it (4 of 100 digits are wrong now).
    assert accuracy > 0.85
    assert f"accuracy {100 * accuracy:.1f} % against the file's 'label' column" in result.stderr
    # The labels are those of the Python model on the same data.
    model = KernelModel.load(tmp / "model")
    np.testing.assert_array_equal(predicted, model.predict_labels(x_test))


def test_digits_scores(digits):
    tmp, x_test, _, _ = digits
    result = run("predict", tmp / "model", tmp / "test.npz", "--array", "x", "--scores", "-q")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    header, rows = read_rows(result.stdout)
    assert header == ["label"] + [f"score_{c}" for c in range(10)] + ["std"]
    values = np.array([row[1:] for row in rows], dtype=float)
    mean, std = KernelModel.load(tmp / "model").predict(x_test)
    np.testing.assert_allclose(values[:, :10], mean, rtol=1e-10, atol=1e-12)   # 12 printed digits
    np.testing.assert_allclose(values[:, 10], std[:, 0], rtol=1e-10, atol=1e-12)
    assert [int(row[0]) for row in rows] == np.argmax(values[:, :10], axis=1).tolist()


def test_without_classify_integer_labels_are_a_regression_with_a_hint(digits):
    tmp, _, _, _ = digits
    result = run("fit", tmp / "train.npz", "--array", "x", "--target", "label", "--spec", tmp / "cnn.json",
                 "-o", tmp / "regression", "-q")
    assert result.exit_code == 0, result.output
    hints = [line for line in result.stderr.splitlines() if line.startswith("hint:")]
    assert len(hints) == 1 and "10 distinct integers" in hints[0] and "--classify" in hints[0]
    assert KernelModel.load(tmp / "regression").classes is None


def _text_tables(tmp_path):
    rng = np.random.default_rng(7)
    centres = np.array([[0.0, 3.0], [3.0, 0.0], [-3.0, -3.0]])
    names = np.array(["cat", "dog", "emu, the bird"])
    codes = np.arange(30) % 3
    x = centres[codes] + 0.4 * rng.normal(size=(30, 2))
    for name, rows in (("train.csv", slice(0, 24)), ("test.csv", slice(24, 30))):
        with open(tmp_path / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["a", "kind", "b"])
            writer.writerows([[repr(float(a)), n, repr(float(b))]
                              for (a, b), n in zip(x[rows], names[codes[rows]], strict=True)])
    return x, names[codes]


def test_text_labels_are_classes_and_come_back_as_text(tmp_path):
    x, labels = _text_tables(tmp_path)
    result = run("fit", tmp_path / "train.csv", "--target", "kind", "--depth", 2, "-o", tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert "classifier of kind (3 classes) on 24 rows of 2 feature columns: a, b" in result.stderr
    result = run("predict", tmp_path / "m", tmp_path / "test.csv")
    assert result.exit_code == 0, result.output
    header, rows = read_rows(result.stdout)
    assert header == ["label"] and [row[0] for row in rows] == labels[24:].tolist()   # clusters 7 sigma apart
    assert "accuracy 100.0 %" in result.stderr
    model = KernelModel.fit(x[:24], labels[:24], ModelSettings.mlp(depth=2), task="classification",
                            standardize_x=True)
    assert KernelModel.load(tmp_path / "m").classes.tolist() == model.classes.tolist() == sorted(set(labels))


def test_classification_errors_are_one_line(tmp_path, digits):
    _text_tables(tmp_path)
    rows = np.column_stack([np.arange(8.0), np.arange(8.0) * 0.5, np.arange(8.0) % 2])
    np.savetxt(tmp_path / "t.csv", rows, delimiter=",", header="a,half,odd", comments="")
    assert_one_line_error(run("fit", tmp_path / "t.csv", "--target", "half", "--classify", "-o", tmp_path / "m"),
                          "non-integer values (data row 2: 0.5)")
    assert_one_line_error(run("fit", tmp_path / "t.csv", "--target", "half", "--target", "odd", "--classify",
                              "-o", tmp_path / "m"), "--classify takes one target column", code=2)
    assert_one_line_error(run("fit", tmp_path / "train.csv", "--target", "kind", "--target", "b",
                              "-o", tmp_path / "m"), "a classifier takes one target column")
    np.savetxt(tmp_path / "one.csv", np.column_stack([np.arange(4.0), np.ones(4)]), delimiter=",", header="a,y",
               comments="")
    assert_one_line_error(run("fit", tmp_path / "one.csv", "--target", "y", "--classify", "-o", tmp_path / "m"),
                          "at least two classes")
    result = run("fit", tmp_path / "t.csv", "--target", "half", "-o", tmp_path / "r")
    assert result.exit_code == 0 and "hint" not in result.stderr      # not integers: no hint
    assert_one_line_error(run("predict", tmp_path / "r", tmp_path / "t.csv", "--scores"), "--scores is for", code=2)


def test_string_arrays_of_an_npz_are_labels_and_kernel_drops_a_text_column(tmp_path):
    x, labels = _text_tables(tmp_path)
    np.savez(tmp_path / "train.npz", x=x[:24], kind=labels[:24])
    result = run("fit", tmp_path / "train.npz", "--array", "x", "--target", "kind", "-o", tmp_path / "m", "-q")
    assert result.exit_code == 0, result.output
    np.save(tmp_path / "test.npy", x[24:])
    header, rows = read_rows(run("predict", tmp_path / "m", tmp_path / "test.npy", "-q").stdout)
    assert [row[0] for row in rows] == labels[24:].tolist()
    # A text column is a feature nowhere: `kernel` drops it like any other.
    result = run("kernel", tmp_path / "train.csv", "--drop", "kind", "-o", tmp_path / "K.npy")
    assert result.exit_code == 0, result.output
    assert "24 rows of 2 feature columns: a, b" in result.stderr
