"""Class 6: concurrency. The lock is taken before anything is created or cleaned, so a second
run never touches the first one's in-flight files and gets the lock's clear error; of several
processes creating one new store, each either finishes or gets that error; a complete store on
read-only media opens for reading without a lock."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import torchntk as tn
from torchntk.scale import kernel_matrix
from torchntk.scale import store as store_module
from torchntk.scale.compute import STALL_ENV

pytest.importorskip("zarr")

N, TILE = 24, 8
CHILD = textwrap.dedent(f"""
    import sys, torch, torchntk as tn
    from torchntk.scale import kernel_matrix
    x = torch.randn({N}, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    try:
        kernel_matrix(tn.mlp(3), x, store=sys.argv[1], tile={TILE}, dtype=torch.float64, progress=False)
        print("OK", flush=True)
    except Exception as exc:
        print(f"{{type(exc).__name__}}: {{exc}}", flush=True)
""")


def _x():
    return torch.randn(N, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _child(store, **env):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(store)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def test_a_second_run_never_cleans_the_first_runs_files(tmp_path):
    store = tmp_path / "K.zarr"
    first = _child(store, **{STALL_ENV: "2"})   # stalls, holding the lock, after writing its 2nd tile
    try:
        for line in first.stderr:
            if "stalled before recording tile" in line:
                break
        else:
            pytest.fail(f"the first run exited early: {first.stdout.read()}")
        in_flight = store / "ntk" / "c" / "2" / "2.inflight.partial"   # what zarr leaves mid-write
        in_flight.parent.mkdir(parents=True, exist_ok=True)
        in_flight.write_bytes(b"\0" * 8)
        with pytest.raises(RuntimeError, match="another process is computing"):
            kernel_matrix(tn.mlp(3), _x(), store=store, tile=TILE, dtype=torch.float64, progress=False)
        assert in_flight.exists()  # refused before touching anything
    finally:
        first.kill()
        first.wait(timeout=60)
    resumed = kernel_matrix(tn.mlp(3), _x(), store=store, tile=TILE, dtype=torch.float64, progress=False)
    assert not in_flight.exists()  # the next run that holds the lock cleans up
    np.testing.assert_allclose(np.asarray(resumed), tn.mlp(3).ntk(_x()).numpy(), rtol=1e-12, atol=0)


def test_processes_racing_to_create_one_store(tmp_path):
    store = tmp_path / "new.zarr"
    children = [_child(store) for _ in range(2)]
    outcomes = [child.communicate(timeout=120)[0].strip() for child in children]
    for outcome in outcomes:   # each one either finished or got the lock's error: nothing else
        assert outcome == "OK" or outcome.startswith("RuntimeError: another process is computing"), outcome
    assert "OK" in outcomes
    final = kernel_matrix(tn.mlp(3), _x(), store=store, tile=TILE, dtype=torch.float64, progress=False)
    # Tiles and the direct call differ by round-off only (1e-12 relative, as in tests/scale).
    np.testing.assert_allclose(np.asarray(final), tn.mlp(3).ntk(_x()).numpy(), rtol=1e-12, atol=0)


def _read_only(monkeypatch):
    """Stand-in for read-only media (the tests may run as root, who can write anywhere): taking
    the store's lock fails as it does on a read-only filesystem."""
    def refuse(root):
        raise OSError(errno.EROFS, "Read-only file system", str(root))
    monkeypatch.setattr(store_module, "directory_lock", refuse)


def test_a_complete_read_only_store_opens_without_a_lock(tmp_path, monkeypatch):
    store = tmp_path / "K.zarr"
    expected = np.asarray(kernel_matrix(tn.mlp(3), _x(), store=store, tile=TILE, dtype=torch.float64,
                                        progress=False)).copy()
    _read_only(monkeypatch)
    again = kernel_matrix(tn.mlp(3), _x(), store=store, tile=TILE, dtype=torch.float64, progress=False)
    assert again.summary.computed == 0
    np.testing.assert_array_equal(np.asarray(again), expected)


def test_an_incomplete_read_only_store_is_a_clear_error(tmp_path, monkeypatch):
    store = tmp_path / "K.zarr"
    k = kernel_matrix(tn.mlp(3), _x(), store=store, tile=TILE, dtype=torch.float64, progress=False)
    k.store.unmark(0, 1)
    _read_only(monkeypatch)
    with pytest.raises(ValueError, match=r"cannot be written.*1 tile\(s\) are still to compute"):
        kernel_matrix(tn.mlp(3), _x(), store=store, tile=TILE, dtype=torch.float64, progress=False)
