"""Resuming: after kill -9, Ctrl-C or a half-written tile, a rerun computes only the missing
tiles and gives the same matrix; a tile is trusted only once recorded complete."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import torchntk as tn
from torchntk.scale import compute as compute_module
from torchntk.scale import kernel_matrix
from torchntk.scale.compute import STALL_ENV
from torchntk.scale.store import KernelStore

pytest.importorskip("zarr")

SPEC = tn.mlp(depth=3, activation="relu", bias_std=0.1)
N, D, TILE = 200, 6, 50          # a 4 x 4 grid of tiles: 10 on and above the diagonal
TILES = 10


def _x() -> torch.Tensor:
    return torch.randn(N, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def _markers(path) -> set[tuple[int, int]]:
    return KernelStore.open(path).done()


# The child builds the same data from the same seed, and stalls (test hook) after writing its
# STALL-th tile and before recording it complete: the worst instant to die.
CHILD = textwrap.dedent(f"""
    import torch, torchntk as tn
    from torchntk.scale import kernel_matrix
    x = torch.randn({N}, {D}, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    kernel_matrix(tn.mlp(depth=3, activation="relu", bias_std=0.1), x, store=__import__("sys").argv[1],
                  tile={TILE}, dtype=torch.float64, progress=False)
""")


def test_kill_9_midway_then_resume(tmp_path):
    store = tmp_path / "K.zarr"
    stall = 4
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(store)], stderr=subprocess.PIPE, text=True,
                             env={**os.environ, STALL_ENV: str(stall)})
    try:
        for line in child.stderr:  # wait until the child is parked at the hook
            if "stalled before recording tile" in line:
                stalled = tuple(int(v) for v in re.search(r"tile \((\d+), (\d+)\)", line).groups())
                break
        else:
            pytest.fail(f"the child exited (code {child.wait()}) without reaching the test hook")
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    done = _markers(store)
    assert len(done) == stall - 1             # tiles are computed in parallel: which ones varies
    assert stalled not in done                # the stalled tile is on disk but not recorded
    assert (store / "ntk" / "c" / str(stalled[0]) / str(stalled[1])).is_file()
    resumed = kernel_matrix(SPEC, _x(), store=store, tile=TILE, dtype=torch.float64, progress=False)
    assert resumed.summary.computed == TILES - (stall - 1)   # the unrecorded tile is redone
    assert resumed.summary.skipped == stall - 1
    assert stalled in _markers(store)
    # Same tiles, same arithmetic as the direct path: round-off only (1e-12 relative).
    np.testing.assert_allclose(np.asarray(resumed), SPEC.ntk(_x()).numpy(), rtol=1e-12, atol=0)


def test_half_written_tile_is_recomputed_not_read(tmp_path):
    store = tmp_path / "K.zarr"
    full = kernel_matrix(SPEC, _x(), store=store, tile=TILE, dtype=torch.float64, progress=False)
    expected = np.asarray(full).copy()
    # Simulate a crash during tile (1, 2): its chunk is truncated garbage, its marker absent, and
    # zarr's temporary file of an interrupted write is left behind.
    chunk = store / "ntk" / "c" / "1" / "2"
    chunk.write_bytes(b"\x7f" * 100)
    full.store.marker(1, 2).unlink()
    leftover = store / "ntk" / "c" / "1" / "2.deadbeef.partial"
    leftover.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="not computed yet"):
        full.store.done()
        full[60:70, 110:120]
    again = kernel_matrix(SPEC, _x(), store=store, tile=TILE, dtype=torch.float64, progress=False)
    assert again.summary.computed == 1
    assert not leftover.exists()
    np.testing.assert_array_equal(np.asarray(again), expected)


def test_interrupt_keeps_the_tile_in_flight(tmp_path, monkeypatch):
    """Ctrl-C while computing tile k: tiles before it (including the one being written in the
    background) are recorded; the rerun computes exactly the rest."""
    store = tmp_path / "K.zarr"
    real = compute_module.compute_tile
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args[-2:])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(compute_module, "compute_tile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        kernel_matrix(SPEC, _x(), store=store, tile=TILE, dtype=torch.float64, progress=False)
    done = _markers(store)
    # Tiles are submitted in schedule order; the third, (0, 2), was interrupted. The first two
    # had been started before it and are finished and recorded; tiles started in parallel
    # after them may be recorded too, never the interrupted one.
    assert {(0, 0), (0, 1)} <= done and (0, 2) not in done
    monkeypatch.setattr(compute_module, "compute_tile", real)
    resumed = kernel_matrix(SPEC, _x(), store=store, tile=TILE, dtype=torch.float64, progress=False)
    assert resumed.summary.computed == TILES - len(done)
    np.testing.assert_allclose(np.asarray(resumed), SPEC.ntk(_x()).numpy(), rtol=1e-12, atol=0)


def test_a_second_run_on_a_busy_store_is_refused(tmp_path):
    store = tmp_path / "K.zarr"
    first = kernel_matrix(SPEC, _x()[:20], store=store, tile=TILE, dtype=torch.float64, progress=False)
    with first.store.lock():
        with pytest.raises(RuntimeError, match="another process"):
            kernel_matrix(SPEC, _x()[:20], store=store, tile=TILE, dtype=torch.float64, progress=False)
