"""Closed-form kernel gradient flow (torchntk.dynamics.GradientFlow, predict_gradient_flow).

The specification, from docs/conventions.md (time t = lr * steps, cost (1/2N) sum |f - y|^2):
    f_t(X) = y + exp(-t Theta / N) (f_0(X) - y)
    mean_t(x) = T_t(x) y,  T_t(x) = Theta(x, X) Theta^-1 (I - exp(-t Theta / N))
    cov_t(x, x') = Sigma(x, x') + T_t(x) Sigma(X, X) T_t(x')^T - T_t(x) Sigma(X, x') - Sigma(x, X) T_t(x')^T
Every value is checked against an independent dense evaluation of these formulas with
scipy.linalg.expm and a linear solve, never against the eigenbasis code itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import torchntk as tn
from torchntk.dynamics import GradientFlow, predict_gradient_flow

N, M = 12, 5
TIMES = [0.0, 0.5, 3.0, 40.0, float("inf")]
# Round-off: the kernels below have condition numbers < 1e4 (asserted), so float64 solves and
# eigen-reconstructions agree with expm / solve to ~1e4 * 1e-16 relative; 1e-9 leaves margin.
RTOL = 1e-9


def _data(seed=0, n=N, m=M, k=2, d=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    xs = torch.randn(m, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, k, generator=g, dtype=torch.float64)
    return x, y, xs


@pytest.fixture(scope="module")
def problem():
    spec = tn.mlp(depth=3, activation="relu", bias_std=0.1)
    x, y, xs = _data()
    nngp, ntk = spec.kernels(torch.cat([x, xs]))
    assert float(torch.linalg.cond(ntk[:N, :N])) < 1e4
    return dict(spec=spec, x=x, y=y, xs=xs, nngp=nngp.numpy(), ntk=ntk.numpy())


def _reference(p, t, kernel="ntk"):
    """Dense evaluation of the docs/conventions.md formulas at one time (numpy, expm and solve)."""
    theta = p[kernel]
    sigma = p["nngp"]
    tt, st, ss = theta[:N, :N], theta[N:, :N], sigma[N:, N:]
    s_tt, s_st = sigma[:N, :N], sigma[N:, :N]
    y = p["y"].numpy()
    eye = np.eye(N)
    decay = np.zeros((N, N)) if np.isinf(t) else scipy.linalg.expm(-t * tt / N)
    op = st @ np.linalg.solve(tt, eye - decay)  # T_t(x)
    op_train = tt @ np.linalg.solve(tt, eye - decay)
    mean = op @ y
    cov = ss + op @ s_tt @ op.T - op @ s_st.T - s_st @ op.T
    train_mean = y - decay @ y
    train_cov = (eye - op_train) @ s_tt @ (eye - op_train).T
    return mean, cov, train_mean, train_cov


def _close(a, b, scale=None):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(b).max(), 1.0) if scale is None else scale
    np.testing.assert_allclose(a, b, rtol=0, atol=RTOL * scale)


def test_mean_and_covariance_match_the_closed_forms_at_every_time(problem):
    p = problem
    pred = predict_gradient_flow(p["spec"], p["x"], p["y"], p["xs"], t=TIMES)
    assert pred.mean.shape == (len(TIMES), M, 2) and pred.cov.shape == (len(TIMES), M, M)
    assert pred.train_mean.shape == (len(TIMES), N, 2) and pred.train_cov.shape == (len(TIMES), N, N)
    for i, t in enumerate(TIMES):
        mean, cov, train_mean, train_cov = _reference(p, t)
        _close(pred.mean[i], mean)
        _close(pred.cov[i], cov)
        _close(pred.train_mean[i], train_mean)
        _close(pred.train_cov[i], train_cov, scale=max(np.abs(p["nngp"]).max(), 1.0))


def test_time_zero_is_the_prior_and_infinity_interpolates(problem):
    p = problem
    pred = predict_gradient_flow(p["spec"], p["x"], p["y"], p["xs"], t=[0, float("inf")])
    # Exact: at t = 0 the gain is exactly zero, so the prior comes back bit for bit.
    assert torch.equal(pred.mean[0], torch.zeros(M, 2, dtype=torch.float64))
    assert torch.allclose(pred.cov[0], torch.as_tensor(p["nngp"][N:, N:]), rtol=0, atol=1e-15)
    # t = inf: the training targets are fitted and the training covariance vanishes (to round-off).
    _close(pred.train_mean[1], p["y"])
    _close(pred.train_cov[1], np.zeros((N, N)))


def test_large_time_tends_to_the_exact_limit(problem):
    p = problem
    lam_min = float(np.linalg.eigvalsh(p["ntk"][:N, :N])[0]) / N
    t_big = 40.0 / lam_min  # exp(-40) ~ 4e-18: below round-off
    pred = predict_gradient_flow(p["spec"], p["x"], p["y"], p["xs"], t=[t_big, float("inf")])
    _close(pred.mean[0], pred.mean[1])
    _close(pred.cov[0], pred.cov[1])


def test_outputs_share_the_covariance_and_evolve_independently(problem):
    p = problem
    both = predict_gradient_flow(p["spec"], p["x"], p["y"], p["xs"], t=TIMES)
    for j in range(2):
        single = predict_gradient_flow(p["spec"], p["x"], p["y"][:, j], p["xs"], t=TIMES)
        assert single.mean.shape == (len(TIMES), M, 1)
        _close(single.mean[..., 0], both.mean[..., j])
        _close(single.cov, both.cov)


def test_diag_covariance_is_the_diagonal_of_the_full_one(problem):
    p = problem
    full = predict_gradient_flow(p["spec"], p["x"], p["y"], p["xs"], t=TIMES)
    diag = predict_gradient_flow(p["spec"], p["x"], p["y"], p["xs"], t=TIMES, cov="diag")
    assert diag.cov is None and diag.var.shape == (len(TIMES), M) and diag.train_var.shape == (len(TIMES), N)
    _close(diag.var, full.cov.diagonal(dim1=1, dim2=2).clamp_min(0))
    _close(diag.train_var, full.train_cov.diagonal(dim1=1, dim2=2).clamp_min(0))
    none = predict_gradient_flow(p["spec"], p["x"], p["y"], p["xs"], t=TIMES, cov=None)
    assert none.cov is None and none.var is None and none.train_cov is None
    _close(none.mean, full.mean)


def test_many_times_at_once_equal_one_at_a_time(problem):
    p = problem
    flow = GradientFlow(p["ntk"][:N, :N], p["y"], nngp_train=p["nngp"][:N, :N])
    kw = dict(ntk_test_train=p["ntk"][N:, :N], nngp_test_train=p["nngp"][N:, :N], nngp_test=p["nngp"][N:, N:])
    together = flow.predict(TIMES, **kw)
    for i, t in enumerate(TIMES):
        alone = flow.predict(t, **kw)
        _close(alone.mean[0], together.mean[i])
        _close(alone.cov[0], together.cov[i])


def test_one_networks_trajectory_from_its_initial_outputs(problem):
    p = problem
    g = torch.Generator().manual_seed(5)
    f0, f0s = torch.randn(N, 2, generator=g, dtype=torch.float64), torch.randn(M, 2, generator=g, dtype=torch.float64)
    flow = GradientFlow(p["ntk"][:N, :N], p["y"], nngp_train=p["nngp"][:N, :N])
    pred = flow.predict(TIMES, ntk_test_train=p["ntk"][N:, :N], f0_train=f0, f0_test=f0s,
                        nngp_test_train=p["nngp"][N:, :N], nngp_test=p["nngp"][N:, N:])
    assert pred.cov is None and pred.train_cov is None  # one network's trajectory is deterministic
    tt, st = p["ntk"][:N, :N], p["ntk"][N:, :N]
    for i, t in enumerate(TIMES):
        decay = np.zeros((N, N)) if np.isinf(t) else scipy.linalg.expm(-t * tt / N)
        resid = p["y"].numpy() - f0.numpy()
        _close(pred.train_mean[i], f0.numpy() + (np.eye(N) - decay) @ resid)
        _close(pred.mean[i], f0s.numpy() + st @ np.linalg.solve(tt, (np.eye(N) - decay) @ resid))


def test_nngp_limit_is_the_gaussian_process_posterior(problem):
    """Readout-only training at t = inf is exactly GP regression with Sigma(L) (Cholesky here)."""
    p = problem
    pred = predict_gradient_flow(p["spec"], p["x"], p["y"], p["xs"], t=float("inf"), kernel="nngp")
    k = p["nngp"]
    factor = scipy.linalg.cho_factor(k[:N, :N], lower=True)
    mean = k[N:, :N] @ scipy.linalg.cho_solve(factor, p["y"].numpy())
    cov = k[N:, N:] - k[N:, :N] @ scipy.linalg.cho_solve(factor, k[:N, N:])
    # The NNGP is worse conditioned than the NTK here; its condition number bounds the round-off.
    scale = float(np.linalg.cond(k[:N, :N])) * 1e-15 / RTOL
    _close(pred.mean[0], mean, scale=max(scale, 1.0) * np.abs(mean).max())
    _close(pred.cov[0], cov, scale=max(scale, 1.0) * np.abs(k).max())


def test_nngp_kernel_at_finite_time_uses_sigma_for_the_dynamics(problem):
    p = problem
    pred = predict_gradient_flow(p["spec"], p["x"], p["y"], p["xs"], t=TIMES[:-1], kernel="nngp")
    for i, t in enumerate(TIMES[:-1]):
        mean, cov, train_mean, _ = _reference(p, t, kernel="nngp")
        scale = float(np.linalg.cond(p["nngp"][:N, :N])) * 1e-15 / RTOL
        _close(pred.mean[i], mean, scale=max(scale, 1.0) * max(np.abs(mean).max(), 1))
        _close(pred.cov[i], cov, scale=max(scale, 1.0) * max(np.abs(cov).max(), 1))


def test_ridge_is_absolute_and_gives_kernel_ridge_regression(problem):
    p = problem
    ridge = 0.3
    pred = predict_gradient_flow(p["spec"], p["x"], p["y"], p["xs"], t=float("inf"), ridge=ridge)
    tt, st = p["ntk"][:N, :N], p["ntk"][N:, :N]
    _close(pred.mean[0], st @ np.linalg.solve(tt + ridge * np.eye(N), p["y"].numpy()))
    # The training-point prediction is the same function at X (so it does not interpolate).
    _close(pred.train_mean[0], tt @ np.linalg.solve(tt + ridge * np.eye(N), p["y"].numpy()))


@pytest.mark.parametrize("as_numpy", [False, True])
def test_ridge_leaves_the_callers_kernel_untouched(problem, as_numpy):
    """The checked kernel shares memory with a float64 tensor or array passed in; the ridge goes on
    a copy, so the caller's matrix and a second flow built from it are unchanged."""
    p = problem
    tt = torch.tensor(p["ntk"][:N, :N], dtype=torch.float64)
    given = tt.numpy() if as_numpy else tt
    before = tt.clone()
    flow = GradientFlow(given, p["y"], ridge=0.5)
    assert torch.equal(tt, before)
    # eigh against eigvalsh of the same matrix: different LAPACK paths, agreement to round-off.
    expected = torch.linalg.eigvalsh(before + 0.5 * torch.eye(N, dtype=torch.float64))
    torch.testing.assert_close(flow.eigenvalues, expected, rtol=1e-13, atol=1e-13)


def test_symmetry_is_checked_on_every_pair():
    """An asymmetry beyond rounding anywhere (here in the last, partial tile of the check's
    512-blocks) is refused; rounding-level asymmetry is averaged away."""
    from torchntk.dynamics._checks import as_square_kernel

    g = torch.Generator().manual_seed(3)
    a = torch.randn(1100, 1100, generator=g, dtype=torch.float64)
    k = a @ a.T
    bad = k.clone()
    bad[1099, 3] += 1e-3 * float(k.abs().max())
    with pytest.raises(ValueError, match="not symmetric"):
        GradientFlow(bad, torch.zeros(1100))
    noisy = k.clone()
    noisy[1099, 3] += 1e-14 * float(k.abs().max())
    out = as_square_kernel(noisy, "ntk_train")
    assert torch.equal(out, out.T) and float((out - k).abs().max()) <= 1e-14 * float(k.abs().max())


def test_from_eigh_rebuilds_the_same_flow(problem):
    p = problem
    flow = GradientFlow(p["ntk"][:N, :N], p["y"], nngp_train=p["nngp"][:N, :N], ridge=0.01)
    again = GradientFlow.from_eigh(flow.eigenvalues.numpy(), flow.eigenvectors.numpy(), p["y"],
                                   nngp_train=p["nngp"][:N, :N], ridge=0.01)
    kw = dict(ntk_test_train=p["ntk"][N:, :N], nngp_test_train=p["nngp"][N:, :N], nngp_test=p["nngp"][N:, N:])
    a, b = flow.predict(TIMES, **kw), again.predict(TIMES, **kw)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.cov, b.cov) and torch.equal(a.train_cov, b.train_cov)
    with pytest.raises(ValueError, match="orthonormal"):
        GradientFlow.from_eigh(flow.eigenvalues, 2 * flow.eigenvectors, p["y"])


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_limit_by_cholesky_equals_the_limit_in_the_eigenbasis(problem, cov):
    """A t = inf prediction before any eigendecomposition takes the Cholesky path; after one, the
    eigenbasis. Same formulas, so the same numbers to round-off (cond < 1e4: 1e-9 is ample)."""
    p = problem
    g = torch.Generator().manual_seed(9)
    kw = dict(ntk_test_train=p["ntk"][N:, :N], nngp_test_train=p["nngp"][N:, :N], nngp_test=p["nngp"][N:, N:],
              cov=cov)
    f0 = dict(f0_train=torch.randn(N, 2, generator=g, dtype=torch.float64),
              f0_test=torch.randn(M, 2, generator=g, dtype=torch.float64))
    for ridge in (0.0, 0.05):
        for extra in ({}, f0):
            chol = GradientFlow(p["ntk"][:N, :N], p["y"], nngp_train=p["nngp"][:N, :N], ridge=ridge)
            eig = GradientFlow(p["ntk"][:N, :N], p["y"], nngp_train=p["nngp"][:N, :N], ridge=ridge)
            assert eig.eigenvalues.shape == (N,)  # decomposes now, so the next call uses the eigenbasis
            a = chol.predict([float("inf")] * 2, **kw, **extra)
            b = eig.predict([float("inf")] * 2, **kw, **extra)
            assert chol._eigh is None  # the Cholesky path never decomposed
            for name in ("t", "mean", "cov", "var", "train_mean", "train_cov", "train_var"):
                x, y = getattr(a, name), getattr(b, name)
                assert (x is None) == (y is None), name
                if x is not None:
                    assert x.shape == y.shape, name
                    _close(x, y)


def test_ill_conditioned_kernel_is_refused_at_infinity_by_both_paths():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    k = (q * torch.logspace(0, -15, 30, dtype=torch.float64)) @ q.T  # cond 1e15 > 1 / (N eps) ~ 1.5e14
    assert int(torch.linalg.cholesky_ex((k + k.T) / 2)[1]) == 0  # the factorisation alone would not notice
    with pytest.raises(ValueError, match="reciprocal condition"):
        GradientFlow((k + k.T) / 2, torch.ones(30)).predict(float("inf"))
    flow = GradientFlow((k + k.T) / 2, torch.ones(30))
    assert flow.eigenvalues.shape == (30,)  # decompose first: the eigenbasis path
    with pytest.raises(ValueError, match="smallest eigenvalue"):
        flow.predict(float("inf"))
    assert bool(torch.isfinite(flow.predict(1e3).train_mean).all())


def test_numpy_in_gives_numpy_out(problem):
    p = problem
    pred = predict_gradient_flow(p["spec"], p["x"].numpy(), p["y"].numpy(), p["xs"].numpy(), t=[1.0])
    assert isinstance(pred.mean, np.ndarray) and isinstance(pred.cov, np.ndarray) and isinstance(pred.t, np.ndarray)


def test_duplicate_points_are_fine_at_finite_time_and_an_error_at_infinity(problem):
    """Duplicates make Theta(X, X) singular: finite times still match the de-duplicated problem
    (the null direction is orthogonal to every Theta(x, X) row), t = inf needs a ridge."""
    p = problem
    x = torch.cat([p["x"], p["x"][:2]])
    y = torch.cat([p["y"], p["y"][:2]])
    spec = p["spec"]
    dup = predict_gradient_flow(spec, x, y, p["xs"], t=[0.5, 3.0])
    nngp, ntk = spec.kernels(torch.cat([x, p["xs"]]))
    n = x.shape[0]
    for i, t in enumerate([0.5, 3.0]):
        decay = scipy.linalg.expm(-t * ntk[:n, :n].numpy() / n)
        # T_t = Theta(x, X) pinv(Theta(X, X)) (I - decay): the pseudo-inverse drops the null direction,
        # which is orthogonal to every row Theta(x, X). Its cutoff (1e-10 relative, far above the
        # null eigenvalues ~1e-16 and far below the others) makes it exact to ~cond * eps.
        op = ntk[n:, :n].numpy() @ np.linalg.pinv(ntk[:n, :n].numpy(), rcond=1e-10) @ (np.eye(n) - decay)
        _close(dup.mean[i], op @ y.numpy())
    with pytest.raises(ValueError, match="ridge"):
        predict_gradient_flow(spec, x, y, p["xs"], t=float("inf"))
    fine = predict_gradient_flow(spec, x, y, p["xs"], t=float("inf"), ridge=1e-6)
    assert bool(torch.isfinite(fine.mean).all())


# -- errors ---------------------------------------------------------------------------

def test_bad_inputs_get_clear_errors(problem):
    p = problem
    tt = p["ntk"][:N, :N]
    flow = GradientFlow(tt, p["y"], nngp_train=p["nngp"][:N, :N])
    with pytest.raises(ValueError, match=">= 0"):
        flow.predict([-1.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        flow.predict([float("nan")])
    y_nan = p["y"].clone()
    y_nan[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        GradientFlow(tt, y_nan)
    with pytest.raises(ValueError, match="rows"):
        GradientFlow(tt, p["y"][:-1])
    with pytest.raises(ValueError, match="square"):
        GradientFlow(p["ntk"][:, :N], p["y"])
    with pytest.raises(ValueError, match="symmetric"):
        GradientFlow(tt + np.triu(np.ones((N, N)), 1), p["y"])
    indefinite = tt - 0.5 * np.linalg.eigvalsh(tt)[-1] * np.eye(N)
    with pytest.raises(ValueError, match="positive semi-definite"):  # found when first decomposed (at call time)
        GradientFlow(indefinite, p["y"]).predict(1.0)
    with pytest.raises(ValueError, match="positive semi-definite"):
        GradientFlow(indefinite, p["y"]).predict(float("inf"))
    with pytest.raises(ValueError, match="ridge"):
        GradientFlow(tt, p["y"], ridge=-1.0)
    with pytest.raises(ValueError, match=r"\(M, N\)"):
        flow.predict(1.0, ntk_test_train=p["ntk"][N:, :N - 1])
    with pytest.raises(ValueError, match="nngp_test must have shape"):
        flow.predict(1.0, ntk_test_train=p["ntk"][N:, :N], nngp_test_train=p["nngp"][N:, :N],
                     nngp_test=p["nngp"][N:, N:][:, :2])
    with pytest.raises(ValueError, match="needs nngp_train"):
        GradientFlow(tt, p["y"]).predict(1.0, ntk_test_train=p["ntk"][N:, :N], nngp_test_train=p["nngp"][N:, :N],
                                         nngp_test=p["nngp"][N:, N:])
    with pytest.raises(ValueError, match="f0_train must have shape"):
        flow.predict(1.0, f0_train=np.zeros((N, 3)))
    with pytest.raises(ValueError, match="both f0_train and f0_test"):
        flow.predict(1.0, ntk_test_train=p["ntk"][N:, :N], f0_train=np.zeros((N, 2)))
    with pytest.raises(ValueError, match="cov must be"):
        flow.predict(1.0, cov="full-ish")
    with pytest.raises(ValueError, match="kernel must be"):
        predict_gradient_flow(p["spec"], p["x"], p["y"], p["xs"], kernel="gp")
    with pytest.raises(ValueError, match="NaN"):
        GradientFlow(np.full((N, N), np.nan), p["y"])
