"""KernelModel with side inputs (adjacency, mask): fitted, predicted and saved with them (model
files of version 5), checked against spec.kernels directly; version-4 files still load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from side_specs import graph_spec, sequence_spec

from torchntk.model_io import VERSION, KernelModel, ModelSettings, content_fingerprint
from torchntk.model_io.files import ARRAY_NAMES

RIDGE = 1e-8




@pytest.fixture
def graphs():
    rng = np.random.default_rng(0)
    x, x_test = rng.normal(size=(12, 2, 5)), rng.normal(size=(4, 2, 5))
    a, a_test = (rng.random((12, 5, 5)) < 0.4).astype(float), (rng.random((4, 5, 5)) < 0.4).astype(float)
    return x, a, rng.normal(size=12), x_test, a_test


@pytest.fixture
def sequences():
    rng = np.random.default_rng(1)
    x, x_test = rng.normal(size=(10, 2, 6)), rng.normal(size=(3, 2, 6))
    lengths, test_lengths = rng.integers(2, 7, size=10), np.array([6, 3, 4])
    positions = np.arange(6)
    return x, positions < lengths[:, None], rng.normal(size=10), x_test, positions < test_lengths[:, None]


def _t_inf_mean(ntk_train, ntk_test_train, y):
    return ntk_test_train @ np.linalg.solve(ntk_train + RIDGE * np.eye(len(y)), y)


def test_a_graph_model_predicts_with_the_kernels_of_its_adjacencies(graphs):
    x, a, y, x_test, a_test = graphs
    spec = graph_spec()
    model = KernelModel.fit(x, y, ModelSettings.with_spec(spec, (2, 5), ridge=RIDGE), side_inputs={"adjacency": a})
    mean, std = model.predict(x_test, side_inputs={"adjacency": a_test})
    want = _t_inf_mean(spec.ntk(x, adjacency=a), spec.ntk(x_test, x, adjacency=(a_test, a)), y)
    # Two float64 solves of the same well-conditioned (ridge 1e-8, 12 x 12) system: ~1e-10.
    np.testing.assert_allclose(mean[:, 0], want, rtol=1e-7, atol=1e-9)
    # Another adjacency gives another prediction: the test graphs are really read.
    other, _ = model.predict(x_test, side_inputs={"adjacency": np.ones_like(a_test)})
    assert np.abs(other - mean).max() > 1e-3


def test_side_inputs_are_saved_and_loaded_with_the_model(tmp_path, graphs):
    x, a, y, x_test, a_test = graphs
    model = KernelModel.fit(x, y, ModelSettings.with_spec(graph_spec(), (2, 5)), side_inputs={"adjacency": a})
    saved = model.save(tmp_path / "m")
    meta = json.loads((saved / "model.json").read_text())
    assert meta["version"] == VERSION == 5 and meta["side_inputs"] == ["adjacency"]
    with np.load(saved / "arrays.npz", allow_pickle=False) as archive:
        np.testing.assert_array_equal(archive["adjacency_train"], a)
    loaded = KernelModel.load(saved)
    np.testing.assert_array_equal(loaded.side_train["adjacency"], a)
    # The same float64 arrays: the same predictions to the bit.
    for got, want in zip(loaded.predict(x_test, side_inputs={"adjacency": a_test}),
                         model.predict(x_test, side_inputs={"adjacency": a_test}), strict=True):
        np.testing.assert_array_equal(got, want)


def test_an_integer_edge_list_is_kept_as_one(tmp_path, graphs):
    x, a, y, x_test, a_test = graphs
    # Each graph's arcs as (tail, head) pairs, padded with -1 to the largest count.
    arcs = [np.argwhere(g > 0) for g in a]
    width = max(len(e) for e in arcs)
    edges = np.full((len(a), width, 2), -1, dtype=np.int64)
    for n, e in enumerate(arcs):  # building the fixture, one graph at a time
        edges[n, :len(e)] = e
    settings = ModelSettings.with_spec(graph_spec(), (2, 5))
    dense = KernelModel.fit(x, y, settings, side_inputs={"adjacency": a})
    sparse = KernelModel.fit(x, y, settings, side_inputs={"adjacency": edges})
    assert sparse.side_train["adjacency"].dtype == np.int64
    loaded = KernelModel.load(sparse.save(tmp_path / "m"))
    assert loaded.side_train["adjacency"].dtype == np.int64
    # Gather/scatter sums against dense products of the same 0/1 weights: float64 round-off.
    np.testing.assert_allclose(loaded.predict(x_test, side_inputs={"adjacency": a_test})[0],
                               dense.predict(x_test, side_inputs={"adjacency": a_test})[0], rtol=1e-9, atol=1e-10)


def test_a_masked_model_predicts_with_the_kernels_of_its_masks(tmp_path, sequences):
    x, m, y, x_test, m_test = sequences
    spec = sequence_spec()
    model = KernelModel.fit(x, y, ModelSettings.with_spec(spec, (2, 6), ridge=RIDGE), side_inputs={"mask": m})
    loaded = KernelModel.load(model.save(tmp_path / "m"))
    assert loaded.side_train["mask"].dtype == np.bool_
    mean, _ = loaded.predict(x_test, side_inputs={"mask": m_test})
    want = _t_inf_mean(spec.ntk(x, mask=m), spec.ntk(x_test, x, mask=(m_test, m)), y)
    np.testing.assert_allclose(mean[:, 0], want, rtol=1e-7, atol=1e-9)
    # Test inputs without a mask are all real: the same as an all-True mask (the same kernels).
    bare, _ = loaded.predict(x_test)
    full, _ = loaded.predict(x_test, side_inputs={"mask": np.ones_like(m_test)})
    np.testing.assert_array_equal(bare, full)


def test_a_version_4_file_loads_without_side_inputs(tmp_path):
    rng = np.random.default_rng(2)
    x, y, x_test = rng.normal(size=(8, 3)), rng.normal(size=8), rng.normal(size=(3, 3))
    model = KernelModel.fit(x, y, ModelSettings())
    saved = model.save(tmp_path / "m")
    meta = json.loads((saved / "model.json").read_text())
    del meta["side_inputs"]
    meta["version"] = 4                     # what version 4 wrote: no "side_inputs", its own fingerprint
    with np.load(saved / "arrays.npz") as archive:
        meta["sha256"] = content_fingerprint(meta, {name: archive[name] for name in ARRAY_NAMES})
    (saved / "model.json").write_text(json.dumps(meta))
    loaded = KernelModel.load(saved)
    assert loaded.side_train == {}
    np.testing.assert_array_equal(loaded.predict(x_test)[0], model.predict(x_test)[0])
    meta["version"] = 5                     # a version-5 file must say "side_inputs"
    (saved / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version-5 torchntk model has"):
        KernelModel.load(saved)


def test_edited_side_inputs_are_refused(tmp_path, graphs):
    x, a, y, _, _ = graphs
    saved = KernelModel.fit(x, y, ModelSettings.with_spec(graph_spec(), (2, 5)),
                            side_inputs={"adjacency": a}).save(tmp_path / "m")
    with np.load(saved / "arrays.npz") as archive:
        arrays = {name: archive[name] for name in archive.files}
    np.savez(saved / "arrays.npz", **{**arrays, "adjacency_train": 1 - a})
    with pytest.raises(ValueError, match="fingerprint"):
        KernelModel.load(saved)
    np.savez(saved / "arrays.npz", **{k: v for k, v in arrays.items() if k != "adjacency_train"})
    with pytest.raises(ValueError, match=r"lacks array\(s\) \['adjacency_train'\]"):
        KernelModel.load(saved)


def test_a_file_whose_side_inputs_do_not_fit_its_network_is_refused(tmp_path, graphs):
    x, a, y, _, _ = graphs
    saved = KernelModel.fit(x, y, ModelSettings.with_spec(graph_spec(), (2, 5)),
                            side_inputs={"adjacency": a}).save(tmp_path / "m")
    meta = json.loads((saved / "model.json").read_text())
    meta["side_inputs"] = []
    with np.load(saved / "arrays.npz") as archive:
        arrays = {name: archive[name] for name in ARRAY_NAMES}
    np.savez(saved / "arrays.npz", **arrays)
    meta["sha256"] = content_fingerprint(meta, arrays)
    (saved / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"network reads \['adjacency'\] but the file stores none"):
        KernelModel.load(saved)


def test_missing_unread_or_misshapen_side_inputs_are_refused(graphs):
    x, a, y, x_test, _ = graphs
    settings = ModelSettings.with_spec(graph_spec(), (2, 5))
    with pytest.raises(ValueError, match="the network reads adjacency"):
        KernelModel.fit(x, y, settings)
    with pytest.raises(ValueError, match="adjacency has shape \\(11, 5, 5\\) but x holds 12 inputs"):
        KernelModel.fit(x, y, settings, side_inputs={"adjacency": a[:11]})
    with pytest.raises(TypeError, match="unknown side input"):
        KernelModel.fit(x, y, settings, side_inputs={"adjacencies": a})
    model = KernelModel.fit(x, y, settings, side_inputs={"adjacency": a})
    with pytest.raises(ValueError, match="the network reads adjacency"):
        model.predict(x_test)
    flat = ModelSettings.mlp(depth=2)
    with pytest.raises(ValueError, match="no layer of the network reads it"):
        KernelModel.fit(x.reshape(12, -1), y, flat, side_inputs={"adjacency": a})
    original = a.copy()
    KernelModel.fit(x, y, settings, side_inputs={"adjacency": a}).side_train["adjacency"][:] = 7.0
    np.testing.assert_array_equal(a, original)   # the model holds a copy, never the caller's array
