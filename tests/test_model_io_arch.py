"""Model files with an architecture: the description is stored as its to_dict() data with the
input shape, predictions equal the closed form for that architecture's kernels, a saved model loads
back exactly, and edited or hostile architecture entries are refused with a clear error."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg

import torchntk as tn
from torchntk.model_io import KernelModel, ModelSettings

CNN = tn.serial(tn.Conv((3, 3), padding="same", bias_std=0.2), tn.ReLU(), tn.Conv((2, 2)), tn.Erf(),
                tn.GlobalAvgPool(), tn.Dense(bias_std=0.1))
SHAPE = (2, 4, 4)


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, *SHAPE))
    y = np.column_stack([np.sin(x.mean(axis=(1, 2, 3)) * 3), x[:, 0, 0, 0]])
    return x, y, rng.normal(size=(4, *SHAPE))


def closed_form_mean(spec, x, y, x_test, t, ridge):
    """mean_t = Theta(x, X) Theta^-1 (I - exp(-t Theta / N)) y, by matrix exponential and solve (no
    eigendecomposition, unlike the code under test)."""
    ntk_xx, ntk_tx = spec.ntk(x), spec.ntk(x_test, x)
    theta = ntk_xx + ridge * np.eye(len(x))
    decay = np.eye(len(x)) if math.isinf(t) else np.eye(len(x)) - scipy.linalg.expm(-t * theta / len(x))
    return ntk_tx @ np.linalg.solve(theta, decay @ y)


@pytest.mark.parametrize("t", [math.inf, 3.0])
def test_architecture_predictions_equal_the_closed_form(data, t):
    x, y, x_test = data
    settings = ModelSettings.with_spec(CNN, time=t, ridge=1e-6)
    model = KernelModel.fit(x, y, settings)  # (N, C, H, W): input_shape taken from the batch
    assert model.settings.input_shape == SHAPE and model.x_train.shape == (10, 32)
    mean, std = model.predict(x_test)
    # Two float64 routes (eigendecomposition vs solve + expm) on a kernel of condition ~1e6: 1e-8.
    np.testing.assert_allclose(mean, closed_form_mean(CNN, x, y, x_test, t, 1e-6), rtol=0, atol=1e-8)
    assert std.shape == mean.shape and np.all(std > 0)
    # Flattened rows give the same predictions: the model reshapes them by its input_shape.
    np.testing.assert_array_equal(model.predict(x_test.reshape(4, -1))[0], mean)


def test_round_trip_is_exact_and_stores_plain_data(tmp_path, data):
    x, y, x_test = data
    model = KernelModel.fit(x.reshape(10, -1), y, ModelSettings.with_spec(CNN.to_dict(), SHAPE, kernel="nngp"),
                            standardize_x=True)
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["settings"]["network"] == CNN.to_dict()
    assert meta["settings"]["input_shape"] == list(SHAPE)
    loaded = KernelModel.load(tmp_path / "m")
    assert loaded.settings == model.settings
    for a, b in zip(loaded.predict(x_test), model.predict(x_test), strict=True):
        np.testing.assert_array_equal(a, b)


def test_every_network_is_saved_as_its_description():
    """One format: a fully-connected model's settings hold its description's to_dict() data, as
    any other architecture's do, and read back to equal settings."""
    out = ModelSettings.mlp(depth=2, activation="erf", bias_std=0.3).to_json()
    assert out["network"] == tn.mlp(2, "erf", bias_std=0.3).to_dict() and out["input_shape"] is None
    assert ModelSettings.from_json(out) == ModelSettings.mlp(depth=2, activation="erf", bias_std=0.3)
    assert ModelSettings.with_spec(CNN, SHAPE).to_json()["network"] == CNN.to_dict()


def _edit(path, change):
    meta = json.loads(path.read_text())
    change(meta["settings"])
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(("change", "match"), [
    (lambda s: s["network"]["network"]["layers"].__setitem__(0, {"layer": "Evil"}), "unknown layer 'Evil'"),
    (lambda s: s["network"]["network"]["layers"][0].update(padding="circular"), "fingerprint"),
    (lambda s: s["network"]["network"]["layers"][0].update(code="import os"), "takes no argument"),
    (lambda s: s.update(network="serial(Dense())"), "network must be"),
    (lambda s: s.update(input_shape=[2, 16]), "layer 0"),
    (lambda s: s.update(input_shape=["2", 4, 4]), "input_shape must be a list of integers"),
    (lambda s: s.update(input_shape=[0, 4, 4]), "positive integers"),
    (lambda s: s.update(extra=1), "expected"),
])
def test_edited_architecture_entries_are_refused(tmp_path, data, change, match):
    x, y, _ = data
    KernelModel.fit(x, y, ModelSettings.with_spec(CNN)).save(tmp_path / "m")
    _edit(tmp_path / "m" / "model.json", change)
    with pytest.raises(ValueError, match=match):
        KernelModel.load(tmp_path / "m")


def test_deeply_nested_architecture_is_refused(tmp_path, data):
    x, y, _ = data
    KernelModel.fit(x, y, ModelSettings.with_spec(CNN)).save(tmp_path / "m")
    deep = {"layer": "serial", "layers": [{"layer": "Dense"}]}
    for _ in range(100):
        deep = {"layer": "serial", "layers": [deep]}
    _edit(tmp_path / "m" / "model.json", lambda s: s["network"].update(network=deep))
    with pytest.raises(ValueError, match="nest"):
        KernelModel.load(tmp_path / "m")


def test_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="Dense takes vectors"):
        ModelSettings(input_shape=(1, 2, 2)).check()
    with pytest.raises(ValueError, match="unknown layer"):
        ModelSettings(network={"format": "torchntk.spec", "version": 1,
                               "network": {"layer": "serial", "layers": [{"layer": "Nope"}]}}).check()
    with pytest.raises(ValueError, match="filter"):  # a 3x3 "valid" filter on 2x2 inputs, named at settings time
        ModelSettings.with_spec(tn.serial(tn.Conv((3, 3)), tn.ReLU(), tn.Flatten(), tn.Dense()), (1, 2, 2))
    model = KernelModel.fit(np.ones((3, 1, 2, 2)) * np.arange(3)[:, None, None, None], np.arange(3.0),
                            ModelSettings.with_spec(tn.serial(tn.Conv((1, 1)), tn.ReLU(), tn.Flatten(), tn.Dense()),
                                                    ridge=1e-3))
    with pytest.raises(ValueError, match="per-example shape"):
        model.predict(np.ones((2, 1, 4, 1)))
    with pytest.raises(ValueError, match="feature"):
        model.predict(np.ones((2, 5)))
