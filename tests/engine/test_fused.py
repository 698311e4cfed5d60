"""The compiled kernel map of piecewise-linear nonlinearities (torchntk/engine/fused.py) against the
eager one (PiecewiseLinear.expectations), which the rest of the suite runs.

Tolerance: 1e-13 relative to the block's largest entry in float64 (the float32 formula check:
1e-5). Both are the same closed form with the operations in another order: a few ulps per entry,
~1e-16; a wrong constant, branch or slope would be off by 1e-2 and more. Entries at correlations
of exactly +1 and within the snap width of 1 are included. At a correlation of -1 within u ulps,
arccos has an infinite slope: pi - theta = arccos(-rho) = sqrt(2 u eps), and the two paths' arccos
(vectorised or not) round that differently (one gives 0, one 1.5e-8), so those entries are held
to sqrt(2 * 16 eps) = 8.4e-8 relative instead, which is the conditioning of the map there.

The compiled checks need a C++ compiler (torch.compile's CPU backend) and take ~30 s with a cold
cache; without a compiler they are skipped, and the eager path is what runs everywhere.
"""

import os
import shutil

import pytest
import torch

import torchntk as tn
from torchntk.engine import fused
from torchntk.numerics import snap_width

pytestmark = pytest.mark.usefixtures("one_thread")   # small tensors (tests/conftest.py)

HAS_COMPILER = shutil.which(os.environ.get("CXX", "g++")) is not None or shutil.which("c++") is not None
needs_compiler = pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler for torch.compile here")


def _block(dtype=torch.float64, n=5, positions=(4, 3), seed=0):
    """(K, Theta, v1, v2) of n inputs against themselves at each position, from random features:
    a real covariance block, with duplicate inputs (correlation 1), a negated one (-1) and one
    within the snap width of 1."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 6, *positions, dtype=torch.float64, generator=gen)
    a[1] = a[0]
    a[2] = -a[0]
    a[3] = a[0] * (1 + 1e-15)
    cov = torch.einsum("ic...,jc...->ij...", a, a) / 6
    var = torch.einsum("ic...,ic...->i...", a, a) / 6
    ntk = cov * 1.7 + 0.3
    return cov.to(dtype), ntk.to(dtype), var[:, None].to(dtype), var[None].to(dtype)


def _assert_close(got, ref, cov, v1, v2, tolerance):
    """|got - ref| <= tolerance * max |ref|, and sqrt(2 * 16 eps) * max |ref| at correlations
    within 16 ulps of -1 (the module docstring)."""
    eps = torch.finfo(cov.dtype).eps
    rho = cov / (v1.sqrt() * v2.sqrt())
    bound = torch.where((rho + 1).abs() <= 16 * eps, max(tolerance, (32 * eps) ** 0.5), tolerance)
    assert ((got - ref).abs() <= bound * ref.abs().max()).all(), ((got - ref).abs() / ref.abs().max()).max()


def _eager(act, cov, ntk, v1, v2):
    ess, edd = act.expectations(v1, v2, cov.clone(), derivative=True, overwrite=True)
    return ess, ntk * edd


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-13), (torch.float32, 1e-5)])
@pytest.mark.parametrize("act", [tn.ReLU(), tn.LeakyReLU(0.2), tn.PiecewiseLinear(a=1.5, b=-0.5)],
                         ids=["relu", "leaky", "piecewise"])
def test_the_formula_is_the_eager_map(act, dtype, tolerance):
    cov, ntk, v1, v2 = _block(dtype)
    constants = [torch.tensor(c, dtype=dtype) for c in ((act.a - act.b) ** 2 / 2, act.a * act.b,
                                                         snap_width(dtype))]
    ess, ntk2 = fused.piecewise_map(cov, ntk, v1.sqrt(), v2.sqrt(), *constants)
    want_ess, want_ntk = _eager(act, cov, ntk, v1, v2)
    _assert_close(ess, want_ess, cov, v1, v2, tolerance)
    _assert_close(ntk2, want_ntk, cov, v1, v2, tolerance)


@needs_compiler
def test_the_compiled_map_agrees_with_the_eager_one(monkeypatch):
    monkeypatch.setenv("TORCHNTK_COMPILE", "always")
    cov, ntk, v1, v2 = _block()
    with torch.no_grad():
        assert fused.applies(cov, v1, v2)
        out = fused.run(cov, ntk, v1, v2, 0.5, 0.0)
    assert out is not None, "the compiler is present, so the compiled map must run"
    want = _eager(tn.ReLU(), cov, ntk, v1, v2)
    for got, ref in zip(out, want, strict=True):
        _assert_close(got, ref, cov, v1, v2, 1e-13)


@needs_compiler
def test_kernels_are_the_same_with_and_without_the_compiled_pass(monkeypatch):
    calls = []
    real_run = fused.run

    def counting(*args, **kwargs):
        calls.append(1)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(fused, "run", counting)
    spec = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.Conv((3, 3), padding="same"), tn.ReLU(),
                     tn.Flatten(), tn.Dense())
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    monkeypatch.setenv("TORCHNTK_COMPILE", "never")
    eager = spec.kernels(x)
    assert not calls
    monkeypatch.setenv("TORCHNTK_COMPILE", "always")
    compiled = spec.kernels(x)
    assert calls, "TORCHNTK_COMPILE=always must take the compiled pass on these blocks"
    for got, ref in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-13 * ref.abs().max().item())


def test_when_the_compiled_pass_applies(monkeypatch):
    cov, _, v1, v2 = _block()
    with torch.no_grad():
        monkeypatch.setenv("TORCHNTK_COMPILE", "auto")
        assert not fused.applies(cov, v1, v2)        # far below MIN_ENTRIES: a compile would not pay
        monkeypatch.setenv("TORCHNTK_COMPILE", "never")
        assert not fused.applies(cov, v1, v2)
    monkeypatch.setenv("TORCHNTK_COMPILE", "always")
    with torch.enable_grad():
        assert not fused.applies(cov, v1, v2)        # differentiated: the eager, autograd-aware path
    with torch.no_grad():
        assert not fused.applies(cov, v1, torch.zeros_like(v2))   # a zero variance: the eager path's guard
    monkeypatch.setenv("TORCHNTK_COMPILE", "sometimes")
    with pytest.raises(ValueError, match="TORCHNTK_COMPILE must be one of"):
        fused.mode()
