"""symmetric_eigh: torch.linalg.eigh's contract (ascending eigenvalues, orthonormal eigenvectors
as columns, the lower triangle read), whichever LAPACK does the work."""

from __future__ import annotations

import pytest
import torch

from torchntk import numerics
from torchntk.numerics import symmetric_eigh

G = torch.Generator().manual_seed(0)
A = torch.randn(60, 60, generator=G, dtype=torch.float64)
K = A @ A.T / 60 + 1e-3 * torch.eye(60, dtype=torch.float64)


@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_it_decomposes_like_torch(backend, monkeypatch):
    monkeypatch.setattr(numerics, "CPU_EIGH", backend)
    values, vectors = symmetric_eigh(K)
    expect = torch.linalg.eigvalsh(K)
    # both are backward stable: eigenvalues to a few ulps of the largest, 1e-12 relative
    torch.testing.assert_close(values, expect, rtol=0, atol=1e-12 * float(expect.max()))
    assert values.dtype == torch.float64 and bool((values[1:] >= values[:-1]).all())
    eye = torch.eye(60, dtype=torch.float64)
    torch.testing.assert_close(vectors.T @ vectors, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(vectors @ torch.diag(values) @ vectors.T, K, rtol=0, atol=1e-12 * float(expect.max()))


def test_it_reads_the_lower_triangle_as_torch_does():
    skewed = K.tril() + 5.0 * K.triu(1)       # only the lower triangle is the matrix
    torch.testing.assert_close(symmetric_eigh(skewed)[0], torch.linalg.eigvalsh(skewed), rtol=0, atol=1e-11)


def test_gradients_and_float32_stay_with_torch():
    k = K.clone().requires_grad_(True)
    values, _ = symmetric_eigh(k)
    values.sum().backward()                    # d(trace)/dK = I
    torch.testing.assert_close(k.grad, torch.eye(60, dtype=torch.float64), rtol=0, atol=1e-10)
    values32, _ = symmetric_eigh(K.float())
    assert values32.dtype == torch.float32
