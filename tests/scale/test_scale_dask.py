"""The Dask path on a real LocalCluster gives the same matrix and the same products."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchntk as tn
from torchntk.scale import StoredKernel, conjugate_gradients, kernel_matrix

pytest.importorskip("zarr")
distributed = pytest.importorskip("distributed")

SPEC = tn.mlp(depth=3, activation="erf", bias_std=0.2)


@pytest.fixture(scope="module")
def client():
    # Threads in this process (processes=False) start in about a second; two workers so tiles
    # really run concurrently and finish out of order.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as dask_client:
            yield dask_client


def _x(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_dask_gives_the_same_matrix(client, tmp_path):
    x = _x(150)
    on_dask = kernel_matrix(SPEC, x, kind="both", store=tmp_path / "K.zarr", tile=40, dtype=torch.float64,
                            client=client, progress=False)
    assert on_dask[1].summary.computed == 10  # 4 x 4 grid, upper triangle
    here = kernel_matrix(SPEC, x, kind="both", store=tmp_path / "L.zarr", tile=40, dtype=torch.float64,
                         progress=False)
    # Workers run exactly the code the driver runs, on the same blocks: identical numbers.
    for a, b in zip(on_dask, here, strict=False):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # ...which equal the direct computation to round-off (1e-12 relative, see test_scale_matrix).
    np.testing.assert_allclose(np.asarray(on_dask[1]), SPEC.ntk(x).numpy(), rtol=1e-12, atol=0)


def test_dask_resumes_only_missing_tiles_from_an_address(client, tmp_path):
    x, x2 = _x(90), _x(70, seed=1)
    first = kernel_matrix(SPEC, x, x2, store=tmp_path / "R.zarr", tile=32, dtype=torch.float64, progress=False)
    expected = np.asarray(first).copy()
    for i, j in [(0, 1), (2, 2)]:
        first.store.marker(i, j).unlink()
    again = kernel_matrix(SPEC, x, x2, store=tmp_path / "R.zarr", tile=32, dtype=torch.float64,
                          client=client.scheduler.address, progress=False)
    assert again.summary.computed == 2 and again.summary.skipped == 7
    np.testing.assert_array_equal(np.asarray(again), expected)


def test_products_and_cg_on_dask(client, tmp_path):
    x = _x(260)
    store = kernel_matrix(SPEC, x, store=tmp_path / "P.zarr", tile=64, dtype=torch.float64, progress=False)
    v = torch.randn(260, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    here = StoredKernel(store).matmul(v)
    there = StoredKernel(store, client=client).matmul(v)
    # The same tile products, summed in a different order: float64 round-off only.
    torch.testing.assert_close(there, here, rtol=1e-12, atol=1e-12)
    result = conjugate_gradients(store, v, ridge=1e-2, tol=1e-8, rank=50, client=client)
    assert result.converged
    a = torch.from_numpy(np.asarray(store)) + 1e-2 * torch.eye(260, dtype=torch.float64)
    assert float((torch.linalg.vector_norm(v - a @ result.solution, dim=0) / v.norm(dim=0)).max()) <= 1e-8
