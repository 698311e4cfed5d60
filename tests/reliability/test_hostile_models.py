"""Class 4: model directories. Every hand edit of model.json or arrays.npz that would change the
predictions is refused at load (content fingerprint, field validation), hostile JSON (deep
nesting, duplicate keys, huge files) is one ValueError, and saving never overwrites a folder
that holds another program's model.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from torchntk.model_io import KernelModel, ModelSettings


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    return rng.normal(size=(6, 3)), rng.normal(size=(6, 1))


@pytest.fixture
def saved(tmp_path, data):
    x, y = data
    model = KernelModel.fit(x, y, ModelSettings(), feature_names=["a", "b", "c"], target_names=["y"])
    return model.save(tmp_path / "m")


def _meta(path):
    return json.loads((path / "model.json").read_text())


def _write(path, meta):
    (path / "model.json").write_text(json.dumps(meta))


def _layers(meta: dict) -> list:
    """The layers of a saved model's network description (a list inside model.json's settings)."""
    return meta["settings"]["network"]["network"]["layers"]


EDITS = {
    "depth": lambda m: _layers(m).extend([{"layer": "ReLU"}, {"layer": "Dense", "bias_std": 0.1, "weight_std": 1.0}]),
    "activation": lambda m: _layers(m).__setitem__(1, {"layer": "Erf"}),
    "kernel": lambda m: m["settings"].update(kernel="nngp"),
    "bias_std": lambda m: _layers(m)[0].update(bias_std=1e6),
    "time": lambda m: m["settings"].update(time=3.0),
    "permuted features": lambda m: m.update(feature_names=["c", "a", "b"]),
    "renamed target": lambda m: m.update(target_names=["z"]),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_plausible_hand_edits_are_refused(saved, edit):
    meta = _meta(saved)
    EDITS[edit](meta)
    _write(saved, meta)
    with pytest.raises(ValueError, match="fingerprint"):
        KernelModel.load(saved)


@pytest.mark.parametrize("change,match", [
    (lambda m: m.update(n_train=99), "n_train = 99"),
    (lambda m: m.update(n_train="6"), "n_train"),
    (lambda m: m["settings"].update(depth=10**20), "depth"),
    (lambda m: m["settings"].update(depth=True), "depth"),
    (lambda m: m["settings"].update(bias_std=1e200), "bias_std"),
    (lambda m: m["settings"].update(time="soon"), "time"),
    (lambda m: m.update(feature_names=["a", "a", "b"]), "twice"),
    (lambda m: m.update(feature_names=["a", "b"]), "shape"),
    (lambda m: m.update(extra=1), "keys"),
    (lambda m: m.pop("sha256"), "keys"),
    (lambda m: m.update(version=1), "older"),
    (lambda m: m.update(sha256=5), "strings"),
])
def test_invalid_fields_are_refused(saved, change, match):
    meta = _meta(saved)
    change(meta)
    _write(saved, meta)
    with pytest.raises(ValueError, match=match):
        KernelModel.load(saved)


@pytest.mark.parametrize("text,match", [
    ('{"format": "torchntk.kernel-model", "format": "x"}', "duplicate key 'format'"),
    ("[" * 100_000 + "]" * 100_000, "nests"),
    ('{"a": NaN}', "NaN"),
    ("\xff\xfe", "not valid JSON"),
])
def test_hostile_json_is_one_value_error(saved, text, match):
    (saved / "model.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=match):
        KernelModel.load(saved)


def test_a_huge_json_is_refused_before_reading(saved):
    from torchntk._json import MAX_BYTES

    with open(saved / "model.json", "wb") as handle:  # valid JSON padded past the limit
        handle.write(b"{}")
        handle.truncate(MAX_BYTES + 1)
    with pytest.raises(ValueError, match="bytes, more than"):
        KernelModel.load(saved)


def test_arrays_from_another_model_are_refused(tmp_path, data, saved):
    x, y = data
    other = KernelModel.fit(x * 2, y, ModelSettings(), feature_names=["a", "b", "c"], target_names=["y"])
    other.save(tmp_path / "other")
    (saved / "arrays.npz").write_bytes((tmp_path / "other" / "arrays.npz").read_bytes())
    with pytest.raises(ValueError, match="fingerprint"):
        KernelModel.load(saved)


@pytest.mark.parametrize("name,value,match", [
    ("x_scale", -1.0, "scale <= 0"),
    ("y_scale", 0.0, "scale <= 0"),
    ("nngp_train", np.nan, "NaN or infinite"),
    ("eigenvalues", np.inf, "NaN or infinite"),
])
def test_impossible_array_values_are_refused(saved, name, value, match):
    with np.load(saved / "arrays.npz") as archive:
        arrays = dict(archive)
    arrays[name] = np.full_like(arrays[name], value)
    np.savez(saved / "arrays.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        KernelModel.load(saved)


def test_round_trip_still_exact(saved, data):
    x, _ = data
    loaded = KernelModel.load(saved)
    assert loaded.feature_names == ("a", "b", "c")
    # The very same float64 arrays: identical predictions.
    model = KernelModel.fit(*data, ModelSettings(), feature_names=["a", "b", "c"], target_names=["y"])
    for got, want in zip(loaded.predict(x), model.predict(x), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("content", ['{"name": "my-app", "version": 3}', "not json", '{"format": "other"}'])
def test_fit_never_overwrites_another_programs_model_json(cli, tmp_path, table, content):
    data, _ = table
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "model.json").write_text(content)
    cli.error("fit", data, "--target", "y", "-o", folder, "-q", match=("app", "never overwritten"))
    assert (folder / "model.json").read_text() == content and sorted(p.name for p in folder.iterdir()) == ["model.json"]


def test_fit_replaces_its_own_model(cli, tmp_path, table):
    data, _ = table
    cli.ok("fit", data, "--target", "y", "-o", tmp_path / "m", "-q")
    cli.ok("fit", data, "--target", "y", "--depth", "2", "-o", tmp_path / "m", "-q")
    assert KernelModel.load(tmp_path / "m").settings.spec().depth == 2


def test_cli_reports_tampering_as_one_line(cli, tmp_path, table):
    data, _ = table
    cli.ok("fit", data, "--target", "y", "-o", tmp_path / "m", "-q")
    meta = _meta(tmp_path / "m")
    _layers(meta)[0]["weight_std"] = 7.0
    _write(tmp_path / "m", meta)
    cli.error("predict", tmp_path / "m", data, match="fingerprint")
