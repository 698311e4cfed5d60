"""kernel_matrix: a tiled on-disk kernel equals the direct computation; the view reads any slice;
a store refuses to mix different data or settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import torchntk as tn
from torchntk.scale import KernelMatrix, kernel_matrix, open_kernel_matrix

pytest.importorskip("zarr")

SPEC = tn.mlp(depth=4, activation="relu", bias_std=0.1)


def _data(n: int, d: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return _data(130)


@pytest.fixture(scope="module")
def stored(x, tmp_path_factory) -> KernelMatrix:
    # tile 48 does not divide N = 130: the grid has ragged edge tiles (48, 48, 34).
    return kernel_matrix(SPEC, x, store=tmp_path_factory.mktemp("k") / "K.zarr", tile=48, dtype=torch.float64,
                         progress=False)


def test_tiled_equals_direct(stored, x):
    # Tiles are computed by the same recursion on the same row/column blocks as spec.ntk, so the
    # two agree to floating-point round-off: 1e-12 relative is a few hundred float64 ulps, far
    # below any real discrepancy (a wrong tile or a transposed mirror is off by O(1)).
    direct = SPEC.ntk(x).numpy()
    full = np.asarray(stored)
    assert full.shape == (130, 130) and full.dtype == np.float64
    np.testing.assert_allclose(full, direct, rtol=1e-12, atol=0)
    assert np.array_equal(full, full.T)  # lower tiles are exact mirrors of the upper ones


def test_only_upper_tiles_are_computed(stored, tmp_path):
    grid_side = 3
    assert stored.summary.computed == grid_side * (grid_side + 1) // 2
    chunks = stored.store.path / "ntk" / "c"
    written = {(int(i.name), int(j.name)) for i in chunks.iterdir() for j in i.iterdir()}
    assert written == {(i, j) for i in range(grid_side) for j in range(i, grid_side)}


def test_slices_read_like_the_full_matrix(stored):
    full = np.asarray(stored)
    keys = [
        (slice(10, 100), slice(40, 129)),        # crosses tiles, both triangles
        (slice(120, 5, -7), slice(None, None, 3)),  # negative and positive steps
        (5, slice(None)),                         # a row
        (slice(None), 129),                       # a column, from the last ragged tile
        (77, 12),
        (Ellipsis, slice(0, 2)),
    ]
    for key in keys:
        np.testing.assert_array_equal(stored[key], full[key])
    # Two integer arrays select the block of their outer product (as np.ix_ does).
    rows, cols = np.array([129, 0, 64, 64]), np.array([3, 100])
    np.testing.assert_array_equal(stored[rows, cols], full[np.ix_(rows, cols)])
    assert stored[5:5, :].shape == (0, 130)
    with pytest.raises(IndexError):
        stored[130, 0]
    with pytest.raises(TypeError):
        stored[0.5, 0]


def test_kinds_rectangular_and_float32(tmp_path, x):
    x2 = _data(40, seed=1)
    nngp, ntk = kernel_matrix(SPEC, x, x2, kind="both", store=tmp_path / "both.zarr", tile=32,
                              dtype=torch.float64, progress=False)
    ref_nngp, ref_ntk = SPEC.kernels(x, x2)
    # Same blocks, same arithmetic as the direct path: round-off only (see test_tiled_equals_direct).
    np.testing.assert_allclose(np.asarray(nngp), ref_nngp.numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.asarray(ntk), ref_ntk.numpy(), rtol=1e-12, atol=0)
    assert ntk.summary.computed == 5 * 2  # rectangular: every tile of the 5 x 2 grid
    # float32 store against the direct float32 computation: the same float32 operations up to GEMM
    # blocking, so a few float32 ulps (1e-6 relative, eps32 = 1.2e-7).
    k32 = kernel_matrix(SPEC, x, kind="nngp", store=tmp_path / "f32.zarr", tile=64, progress=False)
    assert k32.dtype == np.float32
    np.testing.assert_allclose(np.asarray(k32), SPEC.nngp(x, dtype=torch.float32).numpy(), rtol=1e-6, atol=0)


def test_reopen(stored):
    again = open_kernel_matrix(stored.path)
    assert again.shape == stored.shape and again.summary is None
    np.testing.assert_array_equal(again[3:90, 50:], stored[3:90, 50:])
    manifest = json.loads((stored.store.path / "zarr.json").read_text())["attributes"]["torchntk"]
    assert manifest["spec"] == SPEC.to_dict()   # the description's plain data, as model files hold it
    assert manifest["tile"] == 48 and manifest["dtype"] == "float64"


def test_reopen_both_needs_a_kind(tmp_path, x):
    kernel_matrix(SPEC, x[:20], kind="both", store=tmp_path / "b.zarr", tile=16, dtype=torch.float64, progress=False)
    with pytest.raises(ValueError, match="kind="):
        open_kernel_matrix(tmp_path / "b.zarr")
    assert open_kernel_matrix(tmp_path / "b.zarr", kind="nngp").kind == "nngp"
    with pytest.raises(ValueError, match="not a torchntk kernel store"):
        open_kernel_matrix(tmp_path)


def test_rerun_computes_nothing(stored, x):
    again = kernel_matrix(SPEC, x, store=stored.path, tile=48, dtype=torch.float64, progress=False)
    assert again.summary.computed == 0 and again.summary.skipped == 6


@pytest.mark.parametrize("change, field", [
    ({"x": "perturbed"}, "data x"),
    ({"tile": 32}, "tile size"),
    ({"dtype": torch.float32}, "dtype"),
    ({"kind": "nngp"}, "kernel kind"),
    ({"spec": tn.mlp(depth=4, activation="relu", bias_std=0.2)}, "network description"),
    ({"spec": tn.mlp(depth=4, activation="erf", bias_std=0.1)}, "network description"),
    ({"x2": "given"}, "whether x2 is None"),
])
def test_store_refuses_other_data_or_settings(stored, x, change, field):
    args = {"spec": SPEC, "x": x, "x2": None, "kind": "ntk", "tile": 48, "dtype": torch.float64}
    args.update(change)
    if change.get("x") == "perturbed":
        args["x"] = x.clone()
        args["x"][17, 3] += 1e-9  # one entry, a tiny change: the fingerprint must still notice
    if change.get("x2") == "given":
        args["x2"] = x
    with pytest.raises(ValueError, match=field):
        kernel_matrix(store=stored.path, progress=False, **args)
    assert np.array_equal(np.asarray(stored), np.asarray(open_kernel_matrix(stored.path)))  # untouched


def test_bad_arguments(tmp_path, x):
    with pytest.raises(ValueError, match="store="):
        kernel_matrix(SPEC, x)
    with pytest.raises(ValueError, match="kind"):
        kernel_matrix(SPEC, x, kind="both-ways", store=tmp_path / "a.zarr")
    with pytest.raises(ValueError, match="tile"):
        kernel_matrix(SPEC, x, store=tmp_path / "a.zarr", tile=0)
    with pytest.raises(TypeError, match="network description"):
        kernel_matrix("relu", x, store=tmp_path / "a.zarr")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a torchntk kernel store"):
        kernel_matrix(SPEC, x, store=tmp_path / "other")
    assert (tmp_path / "other" / "data.txt").read_text() == "mine"


def test_user_activation_is_fingerprinted_by_name_with_a_warning(tmp_path, x):
    def my_tanh(t):
        return torch.tanh(t)

    spec = tn.serial(tn.Dense(), tn.Activation(my_tanh, nodes=8), tn.Dense())
    with pytest.warns(UserWarning, match="user code"):
        k = kernel_matrix(spec, x[:10], store=tmp_path / "u.zarr", tile=8, dtype=torch.float64, progress=False)
    assert "my_tanh" in k.store.manifest["spec"]["network"]["layers"][1]["fn"]
    # A built-in name is recognised as such: no warning.
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernel_matrix(tn.mlp(2, "tanh"), x[:10], store=tmp_path / "t.zarr", tile=8, progress=False)


def test_reading_an_unfinished_tile_is_refused(stored, tmp_path, x):
    k = kernel_matrix(SPEC, x[:30], store=tmp_path / "p.zarr", tile=16, dtype=torch.float64, progress=False)
    k.store.marker(0, 1).unlink()
    k.store.done()
    assert k.missing_tiles() == [(0, 1)] and not k.complete
    with pytest.raises(ValueError, match="not computed yet"):
        k[0:5, 20:25]
    with pytest.raises(ValueError, match="not computed yet"):
        k[20:25, 0:5]  # the mirror of a missing tile is missing too
    direct = SPEC.ntk(x[:30]).numpy()
    # Complete tiles still read. A stored tile's Gram matrix comes from a GEMM of another shape
    # than the direct call's, which BLAS may round differently: round-off only (1e-12 relative).
    np.testing.assert_allclose(k[16:30, 16:30], direct[16:30, 16:30], rtol=1e-12, atol=0)
    np.testing.assert_allclose(k[:16, :16], direct[:16, :16], rtol=1e-12, atol=0)
