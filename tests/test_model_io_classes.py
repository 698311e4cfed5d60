"""KernelModel classifiers: one-hot codes fitted by the same gradient flow, labels of the classes'
own type, and model files of version 4 that store the classes (version-3 files still load)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from torchntk.model_io import VERSION, KernelModel, ModelSettings, content_fingerprint
from torchntk.model_io.files import ARRAY_NAMES


@pytest.fixture
def blobs():
    # Three well-separated clusters in 2-D, 8 points each; test points drawn from the same clusters.
    rng = np.random.default_rng(5)
    centres = np.array([[0.0, 4.0], [4.0, 0.0], [-4.0, -4.0]])
    codes = np.repeat(np.arange(3), 8)
    x = centres[codes] + 0.5 * rng.normal(size=(24, 2))
    test_codes = np.tile(np.arange(3), 4)
    return x, codes, centres[test_codes] + 0.5 * rng.normal(size=(12, 2)), test_codes


@pytest.mark.parametrize("names", [np.array([3, 7, 11]), np.array(["cat", "dog", "emu"])])
def test_a_classifier_is_the_regression_on_centred_one_hot_codes(blobs, names):
    x, codes, x_test, test_codes = blobs
    settings = ModelSettings.mlp(depth=2, time=5.0)
    model = KernelModel.fit(x, names[codes], settings, task="classification", target_names=["kind"])
    assert model.classes.tolist() == names.tolist() and model.classes.dtype.kind == names.dtype.kind
    # The same flow on one-hot codes centred at 1/K, by the regression path, gives the scores.
    one_hot = np.eye(3)[codes]
    regression = KernelModel.fit(x, one_hot - 1 / 3, settings)
    mean, std = model.predict(x_test)
    want_mean, want_std = regression.predict(x_test)
    # The two fits run the same float64 operations on the same numbers but for the shift, so they
    # agree to round-off.
    np.testing.assert_allclose(mean, want_mean + 1 / 3, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(std, want_std, rtol=1e-10, atol=1e-12)
    labels = model.predict_labels(x_test)
    assert labels.dtype.kind == names.dtype.kind
    # Clusters 8 standard deviations apart: every test point is classified right.
    assert labels.tolist() == names[test_codes].tolist()
    assert model.training_accuracy() == 1.0


def test_classes_are_saved_and_loaded(tmp_path, blobs):
    x, codes, x_test, _ = blobs
    for names in (np.array([-1, 0, 5]), np.array(["a", "b,c", "d"])):
        model = KernelModel.fit(x, names[codes], ModelSettings(), task="classification")
        loaded = KernelModel.load(model.save(tmp_path / "m"))
        meta = json.loads((tmp_path / "m" / "model.json").read_text())
        assert meta["version"] == VERSION and meta["classes"] == names.tolist()
        assert loaded.classes.tolist() == names.tolist() and loaded.target_names == ("class",)
        np.testing.assert_array_equal(loaded.predict_labels(x_test), model.predict_labels(x_test))
    regression = KernelModel.fit(x, codes.astype(float), ModelSettings()).save(tmp_path / "r")
    assert json.loads((regression / "model.json").read_text())["classes"] is None
    assert KernelModel.load(regression).classes is None


def _rewrite(directory, meta):
    with np.load(directory / "arrays.npz") as archive:
        arrays = {name: archive[name] for name in ARRAY_NAMES}
    meta["sha256"] = content_fingerprint(meta, arrays)
    (directory / "model.json").write_text(json.dumps(meta))


def test_a_version_3_file_loads_as_a_regression(tmp_path, blobs):
    x, codes, x_test, _ = blobs
    model = KernelModel.fit(x, codes.astype(float), ModelSettings())
    saved = model.save(tmp_path / "m")
    meta = json.loads((saved / "model.json").read_text())
    del meta["classes"], meta["side_inputs"]
    _rewrite(saved, {**meta, "version": 3})     # what version 3 wrote: no "classes", its own fingerprint
    loaded = KernelModel.load(saved)
    assert loaded.classes is None
    np.testing.assert_array_equal(loaded.predict(x_test)[0], model.predict(x_test)[0])
    _rewrite(saved, {**meta, "version": 4})     # a version-4 file must say "classes"
    with pytest.raises(ValueError, match="version-4 torchntk model has"):
        KernelModel.load(saved)


def test_edited_or_bad_classes_are_refused(tmp_path, blobs):
    x, codes, _, _ = blobs
    saved = KernelModel.fit(x, codes, ModelSettings(), task="classification").save(tmp_path / "m")
    meta = json.loads((saved / "model.json").read_text())
    edited = {**meta, "classes": [0, 2, 1]}
    (saved / "model.json").write_text(json.dumps({**meta, "classes": [0, 1, 3]}))
    with pytest.raises(ValueError, match="fingerprint"):
        KernelModel.load(saved)
    _rewrite(saved, edited)
    with pytest.raises(ValueError, match="sorted list"):
        KernelModel.load(saved)
    _rewrite(saved, {**meta, "classes": [0, 1]})   # two labels for three one-hot columns
    with pytest.raises(ValueError, match="y_train"):
        KernelModel.load(saved)


def test_bad_labels_are_refused(blobs):
    x, codes, _, _ = blobs
    with pytest.raises(TypeError, match="astype"):
        KernelModel.fit(x, codes.astype(float), ModelSettings(), task="classification")
    with pytest.raises(ValueError, match="at least two classes"):
        KernelModel.fit(x, np.zeros(24, dtype=int), ModelSettings(), task="classification")
    with pytest.raises(ValueError, match="one label per input row"):
        KernelModel.fit(x, codes[:-1], ModelSettings(), task="classification")
    with pytest.raises(ValueError, match="standardize_y"):
        KernelModel.fit(x, codes, ModelSettings(), task="classification", standardize_y=True)
    with pytest.raises(ValueError, match="task"):
        KernelModel.fit(x, codes, ModelSettings(), task="ranking")
    with pytest.raises(ValueError, match="regression"):
        KernelModel.fit(x, codes.astype(float), ModelSettings()).predict_labels(x)
