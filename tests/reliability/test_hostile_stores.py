"""Class 5: kernel stores trust no tile. A tile deleted, truncated or overwritten after it was
recorded complete is never read: reads verify each chunk's sha256 against its marker; a resumed
run recomputes what fails (sizes always, checksums with verify=True) and says so; edited array
metadata (codecs) and manifests with missing keys are clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import torchntk as tn
from torchntk.scale import conjugate_gradients, kernel_matrix, open_kernel_matrix

pytest.importorskip("zarr")

SPEC = tn.mlp(3)
N, TILE = 40, 16    # a 3 x 3 grid: 6 stored tiles on and above the diagonal


@pytest.fixture
def x():
    return torch.randn(N, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.fixture
def store(tmp_path, x):
    k = kernel_matrix(SPEC, x, store=tmp_path / "K.zarr", tile=TILE, dtype=torch.float64, progress=False)
    return k


def _run(path, x, **options):
    return kernel_matrix(SPEC, x, store=path, tile=TILE, dtype=torch.float64, progress=False, **options)


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "deleted": lambda chunk: chunk.unlink(),
    "truncated": lambda chunk: chunk.write_bytes(chunk.read_bytes()[:100]),
    "emptied": lambda chunk: chunk.write_bytes(b""),
    "overwritten, same size": _flip_a_byte,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("read", ["slice", "mirror", "asarray", "cg"])
def test_damaged_tiles_are_never_read(store, damage, read):
    DAMAGE[damage](store.store.chunk("ntk", 0, 1))
    reopened = open_kernel_matrix(store.path)
    with pytest.raises(ValueError, match=r"tile \(0, 1\).*damaged"):
        if read == "slice":
            reopened[0:4, 20:24]
        elif read == "mirror":
            reopened[20:24, 0:4]
        elif read == "asarray":
            np.asarray(reopened)
        else:  # the streamed (memory-mapped) path of the solvers
            conjugate_gradients(reopened, np.ones(N), ridge=1e-3)


@pytest.mark.parametrize("damage", ["deleted", "truncated", "emptied"])
def test_resume_recomputes_files_of_the_wrong_size_and_says_so(store, x, damage):
    expected = np.asarray(store).copy()
    DAMAGE[damage](store.store.chunk("ntk", 1, 2))
    with pytest.warns(UserWarning, match=r"1 tile\(s\) recorded complete were damaged.*\(1, 2\)"):
        again = _run(store.path, x)
    assert again.summary.computed == 1 and again.summary.damaged == 1
    np.testing.assert_array_equal(np.asarray(again), expected)  # the same tile computation: same bits


def test_verify_true_catches_a_same_size_overwrite(store, x):
    expected = np.asarray(store).copy()
    _flip_a_byte(store.store.chunk("ntk", 0, 0))
    assert _run(store.path, x).summary.computed == 0  # sizes are right: a plain resume cannot tell
    with pytest.warns(UserWarning, match=r"\(0, 0\).*sha256"):
        again = _run(store.path, x, verify=True)
    assert again.summary.computed == 1
    np.testing.assert_array_equal(np.asarray(again), expected)


def test_store_verify_command(cli, store):
    cli.ok("store", "verify", store.path)
    _flip_a_byte(store.store.chunk("ntk", 0, 2))
    store.store.chunk("ntk", 1, 1).unlink()
    cli.error("store", "verify", store.path, match="2 of 6 recorded tiles are damaged")
    result = cli.ok("store", "verify", store.path, "--repair")
    assert "2 damaged tile(s) unmarked" in result.stderr
    assert open_kernel_matrix(store.path).missing_tiles() == [(0, 2), (1, 1)]
    cli.ok("store", "verify", store.path)
    cli.error("store", "verify", store.store.path.parent, match="not a torchntk kernel store")


def test_a_changed_codec_is_refused(store, x):
    meta_path = store.store.path / "ntk" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["codecs"] = [{"name": "bytes", "configuration": {"endian": "big"}}]
    meta_path.write_text(json.dumps(meta))
    for attempt in (lambda: _run(store.path, x), lambda: open_kernel_matrix(store.path)):
        with pytest.raises(ValueError, match="codecs.*changed"):
            attempt()


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.pop("tile"), r"lacks the field\(s\) \['tile'\]"),
    (lambda m: m.pop("shape"), "lacks"),
    (lambda m: m.update(tile="16"), "tile"),
    (lambda m: m.update(shape=[40]), "shape"),
    (lambda m: m.update(dtype="int8"), "dtype"),
    (lambda m: m.update(format="torchntk-kernel-store/1"), "layout"),
])
def test_a_damaged_manifest_is_a_clear_error(store, x, edit, match):
    meta_path = store.store.path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    edit(meta["attributes"]["torchntk"])
    meta_path.write_text(json.dumps(meta))
    for attempt in (lambda: _run(store.path, x), lambda: open_kernel_matrix(store.path)):
        with pytest.raises(ValueError, match=match):
            attempt()


def test_a_damaged_marker_is_a_clear_error(store):
    store.store.marker(0, 1).write_bytes(b"\x01")  # the old one-byte marker
    with pytest.raises(ValueError, match="completion marker.*damaged"):
        open_kernel_matrix(store.path)[0:4, 20:24]


@pytest.mark.parametrize("tile,error", [(10**9, ValueError), (0, ValueError), (True, ValueError), (2.5, ValueError)])
def test_absurd_tiles_are_refused_before_anything_is_written(tmp_path, x, tile, error):
    with pytest.raises(error, match="tile must be"):
        kernel_matrix(SPEC, x, store=tmp_path / "T.zarr", tile=tile, progress=False)
    assert not (tmp_path / "T.zarr").exists()
