"""--spec FILE.json and image inputs on ``torchntk kernel`` / ``fit`` / ``predict``: the files hold
the library's kernels and predictions for the architecture; bad input is one ``Error:`` line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_runner import assert_one_line_error, run

import torchntk as tn
from torchntk.model_io import KernelModel

CNN = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(7, 1, 4, 4))
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "flat.npy", images.reshape(7, 16))
    (tmp_path / "cnn.json").write_text(json.dumps(CNN.to_dict()))
    return tmp_path, images


def test_kernel_of_an_image_array_is_the_architectures(files):
    tmp, images = files
    result = run("kernel", tmp / "images.npy", "--spec", tmp / "cnn.json", "--kind", "both", "-o", tmp / "K.npz", "-q",
                 "--no-standardize")
    assert result.exit_code == 0, result.output
    with np.load(tmp / "K.npz", allow_pickle=False) as saved:
        nngp, ntk = CNN.kernels(images)
        # Block-by-block evaluation of the same float64 library code: round-off only (1e-12).
        np.testing.assert_allclose(saved["nngp"], nngp, rtol=1e-12, atol=0)
        np.testing.assert_allclose(saved["ntk"], ntk, rtol=1e-12, atol=0)


def test_input_shape_reshapes_a_2d_table_and_a_second_file(files):
    tmp, images = files
    np.save(tmp / "flat2.npy", images[:3].reshape(3, 16))
    result = run("kernel", "--no-standardize", tmp / "flat.npy", tmp / "flat2.npy", "--spec", tmp / "cnn.json",
                 "--input-shape", "1,4,4",
                 "-o", tmp / "K.npy", "-q")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(tmp / "K.npy"), CNN.ntk(images, images[:3]), rtol=1e-12, atol=0)


def test_fit_and_predict_with_an_architecture(files):
    tmp, images = files
    y = np.sin(images.sum(axis=(1, 2, 3)))
    np.savez(tmp / "train.npz", x=images, y=y)
    result = run("fit", tmp / "train.npz", "--array", "x", "--target", "y", "--spec", tmp / "cnn.json",
                 "--no-standardize", "--ridge", "1e-8", "-o", tmp / "model", "-q")
    assert result.exit_code == 0, result.output
    model = KernelModel.load(tmp / "model")
    assert model.settings.input_shape == (1, 4, 4)
    assert model.settings.network == CNN.to_dict()
    result = run("predict", tmp / "model", tmp / "images.npy", "-o", tmp / "pred.csv", "-q")
    assert result.exit_code == 0, result.output
    mean = np.loadtxt(tmp / "pred.csv", delimiter=",", skiprows=1)[:, 0]
    # The t = inf mean with ridge r is K (K + r I)^-1 y, computed independently here; at r = 1e-8
    # against eigenvalues ~1e-1 the training targets come back to ~1e-6.
    k = CNN.ntk(images)
    np.testing.assert_allclose(mean, k @ np.linalg.solve(k + 1e-8 * np.eye(7), y), rtol=0, atol=1e-9)
    np.testing.assert_allclose(mean, y, atol=1e-5)


def test_dense_network_sees_images_flattened(files):
    tmp, images = files
    result = run("kernel", tmp / "images.npy", "--depth", "2", "-o", tmp / "K.npy", "-q", "--no-standardize")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(tmp / "K.npy"), tn.mlp(2).ntk(images.reshape(7, 16)), rtol=1e-12, atol=0)


def test_bad_spec_files_and_shapes_are_one_line(files):
    tmp, _ = files
    (tmp / "evil.json").write_text(json.dumps({"format": "torchntk.spec", "version": 1,
                                               "network": {"layer": "serial", "layers": [{"layer": "Evil"}]}}))
    assert_one_line_error(run("kernel", tmp / "images.npy", "--spec", tmp / "evil.json", "-o", tmp / "K.npy"),
                          "unknown layer 'Evil'")
    (tmp / "broken.json").write_text("{not json")
    assert_one_line_error(run("kernel", tmp / "images.npy", "--spec", tmp / "broken.json", "-o", tmp / "K.npy"),
                          "not valid JSON")
    deep = {"layer": "serial", "layers": [{"layer": "Dense"}]}
    for _ in range(40):
        deep = {"layer": "serial", "layers": [deep]}
    (tmp / "deep.json").write_text(json.dumps({"format": "torchntk.spec", "version": 1, "network": deep}))
    assert_one_line_error(run("kernel", tmp / "images.npy", "--spec", tmp / "deep.json", "-o", tmp / "K.npy"),
                          "nests")
    assert_one_line_error(run("kernel", tmp / "flat.npy", "--spec", tmp / "cnn.json", "--input-shape", "1,3,3",
                              "-o", tmp / "K.npy"), "cannot be reshaped")
    assert_one_line_error(run("kernel", tmp / "images.npy", "--spec", tmp / "cnn.json", "--input-shape", "1,16,1",
                              "-o", tmp / "K.npy"), "leave --input-shape out")
    assert_one_line_error(run("kernel", tmp / "flat.npy", "--input-shape", "1,4,4", "-o", tmp / "K.npy"),
                          "give --spec", code=2)
    assert_one_line_error(run("kernel", tmp / "flat.npy", "--spec", tmp / "cnn.json", "--depth", "4",
                              "-o", tmp / "K.npy"), "leave out --depth", code=2)
    assert_one_line_error(run("kernel", tmp / "flat.npy", "--spec", tmp / "cnn.json", "--input-shape", "1,x",
                              "-o", tmp / "K.npy"), "not a shape", code=2)
    # A Conv on plain rows: the library's ArchitectureError, naming the layer, as one line.
    assert_one_line_error(run("kernel", tmp / "flat.npy", "--spec", tmp / "cnn.json", "-o", tmp / "K.npy"),
                          "give --input-shape 1,4,4")
    assert_one_line_error(run("fit", tmp / "images.npy", "--target", "0", "--spec", tmp / "cnn.json",
                              "-o", tmp / "m"), "no target columns")
