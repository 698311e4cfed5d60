"""Kernel stores with side inputs: every tile takes the rows of each side input (adjacency, mask)
that its rows and columns are, the store equals spec.kernels with them, and the store's manifest
fingerprints them, so a resumed store with another adjacency is refused, never mixed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from side_specs import graph_spec, sequence_spec

import torchntk as tn
from torchntk.scale.store import KernelStore

pytest.importorskip("zarr")

# Tiles against one call of spec.kernels in float64: the same operations on the same numbers,
# only the blocking differs (~1e-15 relative); 1e-12 leaves room for summation order.
TOL = {"rtol": 1e-12, "atol": 1e-14}




@pytest.fixture
def graphs():
    rng = np.random.default_rng(0)
    return rng.normal(size=(11, 2, 5)), (rng.random((11, 5, 5)) < 0.4).astype(float)


def _store(spec, x, path, x2=None, **options):
    return tn.kernel_matrix(spec, x, x2, store=path, tile=4, dtype=torch.float64, progress=False, **options)


def test_a_symmetric_store_with_adjacencies_is_spec_kernels(tmp_path, graphs):
    x, a = graphs
    spec = graph_spec()
    nngp, ntk = _store(spec, x, tmp_path / "K.zarr", kind="both", side_inputs={"adjacency": a})   # 3 x 3 tiles
    want_nngp, want_ntk = spec.kernels(x, adjacency=a)
    np.testing.assert_allclose(np.asarray(nngp), want_nngp, **TOL)
    np.testing.assert_allclose(np.asarray(ntk), want_ntk, **TOL)


def test_a_store_of_x_against_x2_with_masks_is_spec_kernels(tmp_path):
    rng = np.random.default_rng(1)
    x, x2 = rng.normal(size=(9, 2, 6)), rng.normal(size=(6, 2, 6))
    positions = np.arange(6)
    m, m2 = positions < rng.integers(2, 7, size=9)[:, None], positions < rng.integers(2, 7, size=6)[:, None]
    spec = sequence_spec()
    got = _store(spec, x, tmp_path / "K.zarr", x2, side_inputs={"mask": (m, m2)})
    np.testing.assert_allclose(np.asarray(got), spec.ntk(x, x2, mask=(m, m2)), **TOL)
    assert np.abs(np.asarray(got) - spec.ntk(x, x2)).max() > 1e-3    # the masks are really read


def test_a_resumed_store_computes_only_its_missing_tiles_with_the_same_adjacency(tmp_path, graphs):
    x, a = graphs
    spec, path = graph_spec(), tmp_path / "K.zarr"
    first = np.asarray(_store(spec, x, path, side_inputs={"adjacency": a}))
    store = KernelStore.open(path)
    with store.lock():
        store.unmark(1, 2)
    again = _store(spec, x, path, side_inputs={"adjacency": a})
    assert again.summary.computed == 1 and again.summary.skipped == 5
    np.testing.assert_array_equal(np.asarray(again), first)


def test_a_store_with_another_adjacency_or_none_is_refused(tmp_path, graphs):
    x, a = graphs
    spec, path = graph_spec(), tmp_path / "K.zarr"
    _store(spec, x, path, side_inputs={"adjacency": a})
    with pytest.raises(ValueError, match=r"the side inputs \(sha256"):
        _store(spec, x, path, side_inputs={"adjacency": 1 - a})
    masked = sequence_spec()
    x_seq = np.random.default_rng(2).normal(size=(5, 2, 6))
    _store(masked, x_seq, tmp_path / "S.zarr")
    with pytest.raises(ValueError, match=r"the side inputs \(sha256"):     # a mask where the store had none
        _store(masked, x_seq, tmp_path / "S.zarr", side_inputs={"mask": np.ones((5, 6), bool)})


def test_bad_side_inputs_are_refused_before_the_store_is_made(tmp_path, graphs):
    x, a = graphs
    spec = graph_spec()
    cases = [({}, "the description reads adjacency"),
             ({"adjacency": a[:10]}, r"side_inputs\['adjacency'\] holds 10 graphs but its inputs hold 11"),
             ({"adjacency": (a, a)}, "is one value for x, not a tuple"),
             ({"adjacency": a, "mask": np.ones((11, 4), bool)}, r"side_inputs\['mask'\] must have shape \(11, 5\)")]
    for side, message in cases:
        with pytest.raises(ValueError, match=message):
            _store(spec, x, tmp_path / "K.zarr", side_inputs=side)
        assert not (tmp_path / "K.zarr").exists()
    with pytest.raises(ValueError, match="no layer of the description reads it"):
        _store(sequence_spec(), x, tmp_path / "K.zarr", side_inputs={"adjacency": a})
    with pytest.raises(TypeError, match="unknown side input"):
        _store(spec, x, tmp_path / "K.zarr", side_inputs={"graph": a})
    original = a.copy()
    _store(spec, x, tmp_path / "K.zarr", side_inputs={"adjacency": a})
    np.testing.assert_array_equal(a, original)


@pytest.mark.parametrize("solver, store", [("cholesky", None), ("cholesky", "K.zarr"), ("cg", None)])
def test_kernel_regression_with_adjacencies_is_the_solve_of_their_kernels(tmp_path, graphs, solver, store):
    x, a = graphs
    rng = np.random.default_rng(3)
    y, x_test, a_test = rng.normal(size=(11, 1)), rng.normal(size=(5, 2, 5)), (rng.random((5, 5, 5)) < 0.4) * 1.0
    spec = graph_spec()
    path = None if store is None else tmp_path / store
    model = tn.scale.KernelRegression(spec, ridge=1e-2, solver=solver, store=path, tile=4, dtype=torch.float64,
                                      tol=1e-12)
    got = model.fit(x, y, side_inputs={"adjacency": a}).predict(x_test, side_inputs={"adjacency": a_test})
    want = spec.ntk(x_test, x, adjacency=(a_test, a)) @ np.linalg.solve(spec.ntk(x, adjacency=a) + 1e-2 * np.eye(11), y)
    # float64 throughout; CG is run to a relative residual of 1e-12 on a system of condition
    # number ~1e3 (ridge 1e-2), so every route agrees with the direct solve to ~1e-9.
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="the description reads adjacency"):
        model.predict(x_test)
