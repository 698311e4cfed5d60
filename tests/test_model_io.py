"""KernelModel: predictions equal the paper's closed forms, and a saved model is plain data that
loads back exactly and refuses anything that is not one of its own."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg

import torchntk as tn
from torchntk.model_io import FORMAT, VERSION, KernelModel, ModelSettings

N, M, D = 12, 5, 3


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D))
    y = np.column_stack([np.sin(2 * x[:, 0]), x[:, 1] * x[:, 2]])
    return x, y, rng.normal(size=(M, D))


def closed_form(spec, x, y, x_test, t, ridge, kernel):
    """mean_t and sd_t from the formulas of docs/conventions.md, by matrix exponential and solve (no
    eigendecomposition, unlike the code under test)."""
    nngp_xx, ntk_xx = spec.kernels(x)
    nngp_tx, ntk_tx = spec.kernels(x_test, x)
    prior = spec.nngp(x_test, diagonal=True)
    if kernel == "nngp":
        ntk_xx, ntk_tx = nngp_xx, nngp_tx
    theta = ntk_xx + ridge * np.eye(len(x))
    decay = np.eye(len(x)) if math.isinf(t) else np.eye(len(x)) - scipy.linalg.expm(-t * theta / len(x))
    transfer = ntk_tx @ np.linalg.solve(theta, decay)  # T_t(x) = Theta(x, X) Theta^-1 (I - exp(-t Theta / N))
    mean = transfer @ y
    var = prior + np.einsum("ij,jk,ik->i", transfer, nngp_xx, transfer) - 2 * np.einsum("ij,ij->i", transfer, nngp_tx)
    return mean, np.sqrt(np.maximum(var, 0))


@pytest.mark.parametrize("kernel,t,ridge", [("ntk", 7.0, 0.0), ("ntk", math.inf, 1e-3), ("nngp", math.inf, 0.0),
                                            ("nngp", 0.5, 0.0)])
def test_predictions_match_closed_form(data, kernel, t, ridge):
    x, y, x_test = data
    settings = ModelSettings.mlp(depth=3, activation="relu", bias_std=0.3, kernel=kernel, time=t, ridge=ridge)
    mean, std = KernelModel.fit(x, y, settings).predict(x_test)
    want_mean, want_std = closed_form(settings.spec(), x, y, x_test, t, ridge, kernel)
    # float64 throughout; the training kernel's condition number here is < 1e4, so solve and
    # eigendecomposition agree to ~1e-12 relative; expm's Pade error is ~1e-15. 1e-8 leaves room.
    np.testing.assert_allclose(mean, want_mean, rtol=1e-8, atol=1e-10)
    # The std is the same for both outputs (the limit kernel is K (x) Id, Theorem 1).
    np.testing.assert_allclose(std, np.column_stack([want_std, want_std]), rtol=1e-7, atol=1e-9)


def test_nngp_at_infinity_is_the_gp_posterior(data):
    x, y, x_test = data
    spec = tn.mlp(2, "erf", bias_std=0.5)
    mean, std = KernelModel.fit(x, y[:, 0], ModelSettings.mlp(depth=2, activation="erf", bias_std=0.5, kernel="nngp",
                                                          ridge=0.0)).predict(x_test)
    k, k_star = spec.nngp(x), spec.nngp(x_test, x)
    post_mean = k_star @ np.linalg.solve(k, y[:, 0])
    post_cov = spec.nngp(x_test) - k_star @ np.linalg.solve(k, k_star.T)
    # Same float64 linear algebra by another route (cholesky-free solve): agreement to ~1e-10.
    np.testing.assert_allclose(mean[:, 0], post_mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(std[:, 0], np.sqrt(np.diag(post_cov)), rtol=1e-6, atol=1e-8)


def test_standardisation_is_undone(data):
    x, y, x_test = data
    x_raw, y_raw = 100 + 5 * x, 1000 + 20 * y
    settings = ModelSettings.mlp(depth=3, time=3.0)
    mean, std = KernelModel.fit(x_raw, y_raw, settings, standardize_x=True, standardize_y=True).predict(
        100 + 5 * x_test)
    xs = (x_raw - x_raw.mean(0)) / x_raw.std(0)
    ys = (y_raw - y_raw.mean(0)) / y_raw.std(0)
    want_mean, want_std = closed_form(settings.spec(), xs, ys, (100 + 5 * x_test - x_raw.mean(0)) / x_raw.std(0),
                                      3.0, settings.ridge, "ntk")
    # Affine maps of float64 data: relative rounding ~1e-15, amplified by the kernel's conditioning.
    np.testing.assert_allclose(mean, want_mean * y_raw.std(0) + y_raw.mean(0), rtol=1e-8)
    np.testing.assert_allclose(std, want_std[:, None] * y_raw.std(0), rtol=1e-7, atol=1e-8)


def test_training_time_overrides_the_saved_one(data):
    x, y, x_test = data
    model = KernelModel.fit(x, y, ModelSettings(time=1.0))
    at_zero, std_zero = model.predict(x_test, time=0.0)
    # At t = 0 the network is untrained: mean exactly 0, std the prior's sqrt(Sigma(x, x)).
    assert np.all(at_zero == 0)
    np.testing.assert_allclose(std_zero[:, 0], np.sqrt(model.settings.spec().nngp(x_test, diagonal=True)),
                               rtol=1e-12)


def test_save_and_load_round_trip(tmp_path, data):
    x, y, x_test = data
    model = KernelModel.fit(x, y, ModelSettings.mlp(kernel="nngp", time=2.5, activation="tanh"),
                            feature_names=["a", "b", "c"], target_names=["u", "v"])
    model.save(tmp_path / "m")
    loaded = KernelModel.load(tmp_path / "m")
    # The loaded model holds the very same float64 arrays, so predictions agree bit for bit.
    for got, want in zip(loaded.predict(x_test), model.predict(x_test), strict=True):
        np.testing.assert_array_equal(got, want)
    assert loaded.settings == model.settings
    assert loaded.feature_names == ("a", "b", "c") and loaded.target_names == ("u", "v")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["format"] == FORMAT and meta["version"] == VERSION
    assert meta["settings"]["time"] == 2.5
    # Plain data: every array loads without pickle.
    with np.load(tmp_path / "m" / "arrays.npz", allow_pickle=False) as archive:
        assert all(archive[name].dtype == np.float64 for name in archive.files)


def test_infinite_time_is_stored_as_strict_json(tmp_path, data):
    x, y, _ = data
    KernelModel.fit(x, y, ModelSettings()).save(tmp_path / "m")
    text = (tmp_path / "m" / "model.json").read_text()
    assert "Infinity" not in text
    assert KernelModel.load(tmp_path / "m").settings.time == math.inf


@pytest.fixture
def saved(tmp_path, data):
    x, y, _ = data
    return KernelModel.fit(x, y, ModelSettings()).save(tmp_path / "m")


def _edit_meta(directory, **changes):
    path = directory / "model.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_load_refuses_a_directory_without_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a torchntk model"):
        KernelModel.load(tmp_path)
    with pytest.raises(ValueError, match="not a torchntk model directory"):
        KernelModel.load(tmp_path / "notes.txt")


def test_load_refuses_a_foreign_format_tag(saved):
    _edit_meta(saved, format="someone-else")
    with pytest.raises(ValueError, match="format tag"):
        KernelModel.load(saved)


def test_load_refuses_a_newer_version(saved):
    _edit_meta(saved, version=99)
    with pytest.raises(ValueError, match="newer"):
        KernelModel.load(saved)


def test_load_refuses_bad_json_and_bad_settings(saved):
    _edit_meta(saved, settings={"depth": 0, "activation": "relu", "bias_std": 0.1, "weight_std": 1.0,
                                "kernel": "ntk", "time": "inf", "ridge": 0.0})
    with pytest.raises(ValueError, match="depth"):
        KernelModel.load(saved)
    (saved / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        KernelModel.load(saved)


def test_load_refuses_pickled_or_inconsistent_arrays(saved):
    with np.load(saved / "arrays.npz") as archive:
        arrays = dict(archive)
    np.savez(saved / "arrays.npz", **{**arrays, "y_train": np.array([{"a": 1}] * N, dtype=object)})
    with pytest.raises(ValueError, match="without pickle"):
        KernelModel.load(saved)
    np.savez(saved / "arrays.npz", **{**arrays, "x_mean": np.zeros(D + 1)})
    with pytest.raises(ValueError, match="x_mean"):
        KernelModel.load(saved)
    np.savez(saved / "arrays.npz", **{k: v for k, v in arrays.items() if k != "nngp_train"})
    with pytest.raises(ValueError, match="lacks"):
        KernelModel.load(saved)
    # Consistent shapes but other numbers: the content fingerprint recorded at save refuses them.
    np.savez(saved / "arrays.npz", **{**arrays, "eigenvectors": arrays["eigenvectors"] * 2})
    with pytest.raises(ValueError, match="fingerprint"):
        KernelModel.load(saved)


def test_save_refuses_someone_elses_directory(tmp_path, data):
    x, y, _ = data
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ValueError, match="not a torchntk model"):
        KernelModel.fit(x, y, ModelSettings()).save(tmp_path / "photos")
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["cat.jpg"]


@pytest.mark.parametrize("field,value,match", [("kernel", "rbf", "kernel"), ("depth", 0, "depth"),
                                               ("activation", "swish", "activation"), ("time", -1.0, "time"),
                                               ("ridge", math.inf, "ridge"), ("bias_std", "big", "bias_std")])
def test_settings_are_checked(data, field, value, match):
    x, y, _ = data
    with pytest.raises((ValueError, TypeError), match=match):
        KernelModel.fit(x, y, ModelSettings.mlp(**{field: value}))


def test_bad_data_is_refused(data):
    x, y, _ = data
    with pytest.raises(ValueError, match="rows"):
        KernelModel.fit(x, y[:-1], ModelSettings())
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        KernelModel.fit(bad, y, ModelSettings())
    with pytest.raises(ValueError, match="feature"):
        KernelModel.fit(x, y, ModelSettings()).predict(x[:, :2])
