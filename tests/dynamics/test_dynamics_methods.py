"""The fast methods of GradientFlow.predict (block Lanczos, refined float32 Cholesky), the "auto"
choice between them, and their a-posteriori checks with fallback to the exact eigendecomposition.

The reference everywhere is method="eigh" (one float64 eigendecomposition, exact to rounding,
itself checked against closed forms and mpmath in test_dynamics_flow.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import torchntk as tn
from torchntk.dynamics import GradientFlow
from torchntk.dynamics.methods import LANCZOS_MIN_N, MIXED_MIN_N, choose, lanczos_budget

N, M, K = 600, 40, 3  # N above both thresholds of "auto" (256 and 512); eigh of 600 x 600 takes ~0.05 s
TIMES = [0.0, 0.5, 3.0, 40.0, 1e3]


def _rel(a, b) -> float:
    """max |a - b| / max |b|: the agreement measure of the benchmark (and of issue 12's 1e-9)."""
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N + M, 10, generator=gen, dtype=torch.float64)
    nngp, ntk = tn.mlp(3, "relu", bias_std=0.1).kernels(x)
    y = torch.randn(N, K, generator=gen, dtype=torch.float64)
    return {"ntk": ntk[:N, :N].contiguous(), "cross": ntk[N:, :N].contiguous(), "nngp": nngp[:N, :N].contiguous(),
            "nngp_cross": nngp[N:, :N].contiguous(), "prior": nngp[N:, N:].diagonal().contiguous(), "y": y}


def _conditioned_kernel(cond: float, n: int = N, seed: int = 1) -> torch.Tensor:
    """V diag(lambda) V^T with a random orthogonal V and log-spaced lambda in [1 / cond, 1]: a
    spectrum with no clusters for Lanczos to exploit, and a known condition number."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    lam = torch.logspace(-math.log10(cond), 0, n, dtype=torch.float64)
    a = (q * lam) @ q.T
    return (a + a.T) / 2


def test_lanczos_means_match_the_eigendecomposition(problem):
    p = problem
    fast = GradientFlow(p["ntk"], p["y"]).predict(TIMES, ntk_test_train=p["cross"], cov=None, method="lanczos")
    exact = GradientFlow(p["ntk"], p["y"]).predict(TIMES, ntk_test_train=p["cross"], cov=None, method="eigh")
    assert fast.method == "lanczos" and exact.method == "eigh"
    # Lanczos stops at an estimated relative error of 1e-11 in u_t = g_t(Theta) Y; the means are
    # Theta(x, X) u_t, and the contract (issue 12, and the benchmark's check) is 1e-9.
    assert _rel(fast.mean, exact.mean) < 1e-9
    assert _rel(fast.train_mean, exact.train_mean) < 1e-9
    assert max(fast.diagnostics["lanczos_error"]) <= 1e-11
    assert 0 < fast.diagnostics["lanczos_steps"] <= lanczos_budget(N, K)


def test_lanczos_follows_one_networks_trajectory_and_ridge(problem):
    p = problem
    gen = torch.Generator().manual_seed(2)
    f0, f0s = torch.randn(N, K, generator=gen, dtype=torch.float64), torch.randn(M, K, generator=gen,
                                                                                 dtype=torch.float64)
    kw = dict(ntk_test_train=p["cross"], f0_train=f0, f0_test=f0s)
    fast = GradientFlow(p["ntk"], p["y"], ridge=0.05).predict(TIMES, method="lanczos", **kw)
    exact = GradientFlow(p["ntk"], p["y"], ridge=0.05).predict(TIMES, method="eigh", **kw)
    # Same 1e-9 contract; at t = 0 both must return f0 itself (u_0 = 0 exactly).
    assert _rel(fast.mean, exact.mean) < 1e-9 and _rel(fast.train_mean, exact.train_mean) < 1e-9
    assert torch.equal(fast.mean[0], f0s)


def test_mixed_cholesky_matches_the_float64_solve(problem):
    p = problem
    flow = GradientFlow(p["ntk"], p["y"], ridge=1e-3)
    fast = flow.predict(float("inf"), ntk_test_train=p["cross"], cov=None, method="mixed")
    exact = GradientFlow(p["ntk"], p["y"], ridge=1e-3).predict(float("inf"), ntk_test_train=p["cross"], cov=None,
                                                               method="cholesky")
    assert fast.method == "mixed-cholesky"
    eigenvalues = torch.linalg.eigvalsh(p["ntk"] + 1e-3 * torch.eye(N, dtype=torch.float64))
    cond = float(eigenvalues[-1] / eigenvalues[0])
    # Refinement stops at a normwise backward error <= 1e-14; the forward error of either solve is
    # then at most ~cond * 1e-14 (cond is computed here), and the means are held to 1e-9 besides.
    assert fast.diagnostics["backward_error"] <= 1e-14
    assert _rel(fast.mean, exact.mean) < max(10 * cond * 1e-14, 1e-12) and _rel(fast.mean, exact.mean) < 1e-9


def test_auto_rules():
    n, k = 4000, 10
    plan = choose("auto", n=n, k=k, t_max_finite=None, any_infinite=True, wants_cov=False, decomposed=False)
    assert (plan.finite, plan.infinite) == (None, "mixed")
    plan = choose("auto", n=MIXED_MIN_N - 1, k=k, t_max_finite=None, any_infinite=True, wants_cov=False,
                  decomposed=False)
    assert plan.infinite == "cholesky"
    plan = choose("auto", n=n, k=k, t_max_finite=100.0, any_infinite=True, wants_cov=False, decomposed=False)
    assert (plan.finite, plan.infinite) == ("lanczos", "mixed")
    plan = choose("auto", n=LANCZOS_MIN_N - 1, k=k, t_max_finite=100.0, any_infinite=False, wants_cov=False,
                  decomposed=False)
    assert plan.finite == "eigh"
    # Covariances need the eigendecomposition at finite t, the float64 factor at t = inf alone.
    assert choose("auto", n=n, k=k, t_max_finite=1.0, any_infinite=True, wants_cov=True,
                  decomposed=False).finite == "eigh"
    assert choose("auto", n=n, k=k, t_max_finite=None, any_infinite=True, wants_cov=True,
                  decomposed=False).infinite == "cholesky"
    # A flow that already holds its eigendecomposition uses it for everything.
    plan = choose("auto", n=n, k=k, t_max_finite=1.0, any_infinite=True, wants_cov=False, decomposed=True)
    assert (plan.finite, plan.infinite) == ("eigh", "eigh")
    with pytest.raises(ValueError, match="t = inf only"):
        choose("mixed", n=n, k=k, t_max_finite=1.0, any_infinite=False, wants_cov=False, decomposed=False)
    with pytest.raises(ValueError, match="means only"):
        choose("lanczos", n=n, k=k, t_max_finite=1.0, any_infinite=False, wants_cov=True, decomposed=False)
    with pytest.raises(ValueError, match="method must be one of"):
        GradientFlow(torch.eye(3, dtype=torch.float64), torch.ones(3)).predict(1.0, method="fast")


def test_auto_on_a_flow(problem):
    p = problem
    kw = dict(ntk_test_train=p["cross"], cov=None)
    assert GradientFlow(p["ntk"], p["y"]).predict(float("inf"), **kw).method == "mixed-cholesky"
    assert GradientFlow(p["ntk"], p["y"]).predict([1.0, 10.0, float("inf")], **kw).method == "lanczos + mixed-cholesky"
    flow = GradientFlow(p["ntk"], p["y"], nngp_train=p["nngp"])
    with_var = flow.predict([1.0, 10.0], ntk_test_train=p["cross"], nngp_test_train=p["nngp_cross"],
                            nngp_test=p["prior"], cov="diag", train_cov=False)
    assert with_var.method == "eigh" and with_var.var is not None
    assert flow.predict([1.0], **kw).method == "eigh"  # decomposed by the previous call
    small = GradientFlow(p["ntk"][:100, :100], p["y"][:100])
    assert small.predict(float("inf")).method == "cholesky" and small.predict(1.0).method == "eigh"


def test_ill_conditioned_kernel_falls_back_to_the_float64_factor():
    # cond = 1e10 >> 1 / eps32 (1.7e7): float32 cannot hold the small eigenvalues, so its factor
    # breaks down or the refinement stagnates; float64 (N eps64 cond ~ 1e-3) still solves it.
    kernel = _conditioned_kernel(1e10)
    y = torch.randn(N, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    pred = GradientFlow(kernel, y).predict(float("inf"), method="mixed")
    assert pred.method == "mixed-cholesky -> cholesky"
    assert "fallback" in pred.diagnostics
    exact = GradientFlow(kernel, y).predict(float("inf"), method="cholesky")
    assert torch.equal(pred.train_mean, exact.train_mean)  # the fallback is the float64 path itself


def test_lanczos_falls_back_to_eigh_where_it_cannot_resolve():
    # An unclustered spectrum with cond 1e6 at t = 1e5 N: the gain needs the whole bottom of the
    # spectrum, far beyond the step budget (N / (2k) = 60). t = 1 converges in a few steps.
    kernel = _conditioned_kernel(1e6)
    y = torch.randn(N, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    times = [1.0, 1e5 * N]
    pred = GradientFlow(kernel, y).predict(times, method="lanczos")
    assert pred.method == "lanczos -> eigh"
    assert "1 of 2 times" in pred.diagnostics["fallback"]
    exact = GradientFlow(kernel, y).predict(times, method="eigh")
    assert torch.equal(pred.train_mean[1], exact.train_mean[1])  # recomputed by the exact path
    assert _rel(pred.train_mean[0], exact.train_mean[0]) < 1e-9  # the resolved time, from Lanczos


def test_stored_kernel_matches_in_memory(tmp_path):
    from torchntk.dynamics import predict_from_store

    rng = np.random.default_rng(0)
    n, m = 200, 30
    x, xs, y = rng.standard_normal((n, 8)), rng.standard_normal((m, 8)), rng.standard_normal((n, 2))
    spec = tn.mlp(3, "relu", bias_std=0.1)
    train = tn.kernel_matrix(spec, x, store=tmp_path / "K.zarr", tile=100, dtype=torch.float64, progress=False)
    cross = tn.kernel_matrix(spec, xs, x, store=tmp_path / "C.zarr", tile=100, dtype=torch.float64, progress=False)
    ridge, times = 1e-2, [0.0, 2.0, 50.0, float("inf")]
    pred, report = predict_from_store(train, y, times, ridge=ridge, test_train=cross, tol=1e-10, cg_tol=1e-11,
                                      progress=False)
    dense, dense_cross = torch.from_numpy(np.asarray(train)), torch.from_numpy(np.asarray(cross))
    exact = GradientFlow(dense, y, ridge=ridge).predict(times, ntk_test_train=dense_cross, cov=None, method="eigh")
    eigenvalues = torch.linalg.eigvalsh(dense + ridge * torch.eye(n, dtype=torch.float64))
    cond = float(eigenvalues[-1] / eigenvalues[0])
    # Finite times: Lanczos' estimated error 1e-10 (two orders inside 1e-8). t = inf: CG's residual
    # 1e-11 bounds the relative error of the solve by cond * 1e-11 (cond computed here).
    assert _rel(pred.mean[:3], exact.mean[:3]) < 1e-8 and _rel(pred.train_mean[:3], exact.train_mean[:3]) < 1e-8
    assert _rel(pred.mean[3], exact.mean[3]) < max(10 * cond * 1e-11, 1e-10)
    assert report.lanczos_steps > 0 and max(report.lanczos_error) <= 1e-10 and max(report.cg_residual) <= 1e-11
    # The test-train kernel recomputed from the spec, tile by tile, gives the same means.
    again, _ = predict_from_store(train, y, times, ridge=ridge, spec=spec, x_train=x, x_test=xs, tile=64,
                                  tol=1e-10, cg_tol=1e-11, progress=False)
    assert _rel(again.mean, pred.mean) < 1e-12
