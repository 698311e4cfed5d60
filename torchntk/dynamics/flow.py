"""Kernel gradient flow on the least-squares cost, in closed form, through one eigendecomposition.

Conventions (DESIGN.md; the paper's Section A.2). The cost is C = (1/2N) sum_i |f(x_i) - y_i|^2
and time is t = lr * steps of full-batch gradient descent on it, so in function space

    d/dt f_t(x) = -(1/N) sum_i Theta(x, x_i) (f_t(x_i) - y_i),

    f_t(x)   = f_0(x) + T_t(x) (y - f_0(X)),   T_t(x) = Theta(x, X) Theta^-1 (I - exp(-t Theta / N)),
    mean_t(x)      = T_t(x) y                                          (over initialisations)
    cov_t(x, x')   = Sigma(x, x') + T_t(x) Sigma(X, X) T_t(x')^T - T_t(x) Sigma(X, x') - Sigma(x, X) T_t(x')^T

with Theta the NTK and Sigma the NNGP kernel (f_0 ~ GP(0, Sigma), Proposition 1). On X itself
f_t(X) = y + exp(-t Theta / N) (f_0(X) - y). Gradient descent with rate eta for k steps replaces
exp(-t Theta / N) by (I - eta Theta / N)^k.

neural-tangents' ``nt.predict.gradient_descent_mse(k, y_train, learning_rate)`` evolves as
exp(-learning_rate * t_nt * K / y_train.size), where y_train.size = N k for k outputs: its time
t_nt corresponds to ours t = learning_rate * t_nt / k (t = learning_rate * t_nt for one output).

Readout-only training (the NNGP limit): the NTK of the last layer alone is Sigma(L), so pass
the NNGP as ``ntk_train`` / ``ntk_test_train`` (and again as the ``nngp_*`` kernels); at t = inf
the mean and covariance are then exactly the Gaussian-process posterior.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ._checks import (
    as_cross_kernel,
    as_outputs,
    as_square_kernel,
    as_steps,
    as_targets,
    as_tensor,
    as_times,
    check_cov,
    check_positive,
    check_ridge,
    input_eps,
)
from .pca import PrincipalComponents
from .prediction import Prediction
from .spectral import check_stable, descent_gain, flow_gain, max_learning_rate_from


class GradientFlow:
    """Closed-form training dynamics of a kernel on fixed training data (any number of times).

    The (ridge-regularised) training kernel Theta(X, X) + ridge * I is eigendecomposed once, in
    float64; every requested time then costs matrix products only.

    Args:
        ntk_train: Theta(X, X), shape (N, N) (tensor or numpy array; float32 is promoted).
        y_train: targets, shape (N,) or (N, k).
        nngp_train: Sigma(X, X), shape (N, N), needed for covariances over initialisations.
        ridge: absolute amount added to the diagonal of Theta(X, X) wherever it is inverted or
            exponentiated (Theta_r = Theta(X, X) + ridge * I); the cross kernel Theta(x, X) is
            not changed, so at t = inf the mean is kernel ridge regression
            Theta(x, X) Theta_r^-1 y. The training-point predictions are this same function
            evaluated at X (at t = inf they equal y only when ridge = 0). neural-tangents'
            relative ``diag_reg`` is ridge = diag_reg * trace(Theta(X, X)) / N.

    Attributes:
        eigenvalues: (N,) eigenvalues of Theta(X, X) + ridge * I (ascending).
        eigenvectors: (N, N) its orthonormal eigenvectors (columns).

    Example:
        >>> nngp, ntk = spec.kernels(torch.cat([x_train, x_test]))
        >>> flow = GradientFlow(ntk[:n, :n], y_train, nngp_train=nngp[:n, :n])
        >>> pred = flow.predict([0, 10, float("inf")], ntk_test_train=ntk[n:, :n],
        ...                     nngp_test_train=nngp[n:, :n], nngp_test=nngp[n:, n:])
        >>> pred.mean.shape, pred.cov.shape     # (3, M, k), (3, M, M)
    """

    def __init__(self, ntk_train: Any, y_train: Any, *, nngp_train: Any = None, ridge: float = 0.0) -> None:
        kernel = as_square_kernel(ntk_train, "ntk_train")
        ridge = check_ridge(ridge)
        eye = torch.eye(kernel.shape[0], dtype=kernel.dtype, device=kernel.device)
        eigenvalues, eigenvectors = torch.linalg.eigh(kernel + ridge * eye)
        self._setup(eigenvalues, eigenvectors, y_train, nngp_train, ridge, input_eps(ntk_train))

    @classmethod
    def from_eigh(cls, eigenvalues: Any, eigenvectors: Any, y_train: Any, *, nngp_train: Any = None,
                  ridge: float = 0.0) -> GradientFlow:
        """Rebuild a flow from a saved ``flow.eigenvalues`` (N,) and ``flow.eigenvectors`` (N, N),
        without recomputing them; they are those of Theta(X, X) + ridge * I, so pass the same ridge."""
        values = as_tensor(eigenvalues, "eigenvalues")
        vectors = as_tensor(eigenvectors, "eigenvectors", values.device)
        n = values.shape[0] if values.dim() == 1 else -1
        if values.dim() != 1 or tuple(vectors.shape) != (n, n):
            raise ValueError(f"eigenvalues must have shape (N,) and eigenvectors (N, N); got {tuple(values.shape)} "
                             f"and {tuple(vectors.shape)}.")
        probe = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(vectors.device)
        # One matrix-vector round trip V (V^T u) = u tests orthonormality in O(N^2), not O(N^3).
        if float((vectors @ (vectors.T @ probe) - probe).norm()) > math.sqrt(input_eps(eigenvectors)) * float(
                probe.norm()):
            raise ValueError("eigenvectors are not orthonormal; pass flow.eigenvectors as saved (columns are vectors).")
        flow = cls.__new__(cls)
        flow._setup(values, vectors, y_train, nngp_train, check_ridge(ridge), input_eps(eigenvalues))
        return flow

    def _setup(self, eigenvalues: Tensor, eigenvectors: Tensor, y_train: Any, nngp_train: Any, ridge: float,
               eps: float) -> None:
        self.eigenvalues, self.eigenvectors, self.ridge = eigenvalues, eigenvectors, ridge
        self.n = n = eigenvalues.shape[0]
        device = eigenvalues.device
        self.y_train = as_targets(y_train, n, device)
        # numpy's matrix_rank rule: eigenvalues below N * eps * lambda_max are rounding noise.
        self._tol = n * eps * max(float(eigenvalues.abs().max()), 1e-300)
        lowest = float(eigenvalues.min()) - ridge
        if lowest < -self._tol:
            raise ValueError(f"ntk_train is not positive semi-definite: its smallest eigenvalue is {lowest:.3g} "
                             f"(largest {float(eigenvalues.max()):.3g}); a kernel matrix K(X, X) never is. Check it "
                             "is the kernel of the training points against themselves.")
        self._nngp_train = None
        if nngp_train is not None:
            self._nngp_train = as_square_kernel(nngp_train, "nngp_train", device)
            if self._nngp_train.shape[0] != n:
                raise ValueError(f"nngp_train has shape {tuple(self._nngp_train.shape)} but ntk_train has N = {n}.")
        self._nngp_eigenbasis: Tensor | None = None
        self._y_eigenbasis = eigenvectors.T @ self.y_train

    # -- public ---------------------------------------------------------------------

    @property
    def max_learning_rate(self) -> float:
        """2 N / lambda_max: gradient descent on C = (1/2N) sum |f - y|^2 converges iff lr is below it."""
        return max_learning_rate_from(self.eigenvalues, self.n)

    def principal_components(self) -> PrincipalComponents:
        """Kernel principal components of the training kernel, from the stored eigendecomposition."""
        return PrincipalComponents.from_eigh(self.eigenvalues, self.eigenvectors)

    def predict(self, t: Any, *, ntk_test_train: Any = None, nngp_test_train: Any = None, nngp_test: Any = None,
                cov: str | None = "full", f0_train: Any = None, f0_test: Any = None,
                train_cov: bool = True) -> Prediction:
        """Outputs under gradient flow at times ``t`` (scalar or (T,); float("inf") for the limit).

        Args:
            t: times in the paper's units (t = lr * steps); t = inf uses 1 / lambda exactly.
            ntk_test_train: Theta(x, X), shape (M, N), for predictions on M test points.
            nngp_test_train: Sigma(x, X), shape (M, N); nngp_test: Sigma(x, x), shape (M, M), or
                (M,) when cov="diag". With nngp_train they give the test covariance.
            cov: "full" (covariance matrices), "diag" (variances only: no M x M matrix) or None.
            f0_train, f0_test: one network's outputs at initialisation, (N, k) and (M, k): then the
                prediction is that network's trajectory f_0 + T_t (y - f_0(X)), without covariance.
            train_cov: also compute the covariance on the training points (O(N^3) per time).

        Returns:
            A `Prediction` with mean (T, M, k), cov (T, M, M) or var (T, M), train_mean (T, N, k),
            train_cov (T, N, N) or train_var (T, N).
        """
        times = as_times(t)
        if bool(torch.isinf(times).any()):
            self._require_invertible("t = inf")
        gain = flow_gain(self.eigenvalues, times, self.n)
        return self._assemble(times, gain, ntk_test_train, nngp_test_train, nngp_test, cov, f0_train, f0_test,
                              train_cov)

    def predict_steps(self, steps: Any, lr: float, *, ntk_test_train: Any = None, nngp_test_train: Any = None,
                      nngp_test: Any = None, cov: str | None = "full", f0_train: Any = None, f0_test: Any = None,
                      train_cov: bool = True) -> Prediction:
        """Outputs after exactly ``steps`` steps of full-batch gradient descent with rate ``lr``.

        The same as `predict` with exp(-t Theta / N) replaced by (I - lr Theta / N)^steps; the
        returned times are lr * steps. It tends to `predict` at t = lr * steps as lr -> 0.
        Warns when lr >= `max_learning_rate` (the iteration does not converge).
        """
        steps = as_steps(steps)
        lr = check_positive(lr, "lr")
        check_stable(self.eigenvalues, lr, self.n, steps)
        if bool(torch.isinf(steps).any()):
            self._require_invertible("steps = inf")
        gain = descent_gain(self.eigenvalues, steps, lr, self.n)
        return self._assemble(steps * lr, gain, ntk_test_train, nngp_test_train, nngp_test, cov, f0_train, f0_test,
                              train_cov)

    # -- internals ------------------------------------------------------------------

    def _require_invertible(self, what: str) -> None:
        low, high = float(self.eigenvalues.min()), float(self.eigenvalues.max())
        if low > self._tol:
            return
        raise ValueError(
            f"the training kernel is singular (numerically): smallest eigenvalue {low:.3g}, largest {high:.3g}, "
            f"so the {what} limit Theta^-1 y does not exist. Pass ridge=... (e.g. ridge={1e-8 * high:.3g}, about "
            "1e-8 of the top eigenvalue), compute the kernel in float64, or remove duplicate training points. "
            "Finite times are well defined without ridge.")

    def _nngp_in_eigenbasis(self) -> Tensor:
        if self._nngp_eigenbasis is None:
            v = self.eigenvectors
            self._nngp_eigenbasis = v.T @ self._nngp_train @ v
        return self._nngp_eigenbasis

    def _assemble(self, times, gain, ntk_test_train, nngp_test_train, nngp_test, cov, f0_train, f0_test,
                  train_cov) -> Prediction:
        cov = check_cov(cov)
        v, n, k, device = self.eigenvectors, self.n, self.y_train.shape[1], self.eigenvalues.device
        if ntk_test_train is None and any(a is not None for a in (nngp_test_train, nngp_test, f0_test)):
            raise ValueError("test kernels or f0_test were given without ntk_test_train = Theta(x_test, x_train).")
        if (f0_test is None) != (f0_train is None) and ntk_test_train is not None:
            raise ValueError("give both f0_train and f0_test (the network's outputs on train and test points), "
                             "or neither (to predict over random initialisations).")
        base_train = as_outputs(f0_train, n, k, device, "f0_train") if f0_train is not None else None
        z = self._y_eigenbasis if base_train is None else v.T @ (self.y_train - base_train)

        # Fraction of the residual fitted along each eigenvector on X: 1 - exp(-t lambda / N) without ridge.
        fitted = (self.eigenvalues - self.ridge)[None, :] * gain
        train_mean = v @ (fitted[:, :, None] * z)
        if base_train is not None:
            train_mean = train_mean + base_train
        pred = Prediction(t=times.to(device), train_mean=train_mean)

        stochastic = cov is not None and base_train is None
        if stochastic and train_cov and self._nngp_train is not None:
            pred.train_cov, pred.train_var = self._train_cov(1 - fitted, cov)
        if ntk_test_train is None:
            return pred

        cross = as_cross_kernel(ntk_test_train, n, device, "ntk_test_train")
        m = cross.shape[0]
        projected = cross @ v  # Theta(x, X) V, shared by every time
        pred.mean = projected @ (gain[:, :, None] * z)
        if base_train is not None:
            pred.mean = pred.mean + as_outputs(f0_test, m, k, device, "f0_test")
        if stochastic and (nngp_test_train is not None or nngp_test is not None):
            pred.cov, pred.var = self._test_cov(projected, gain, nngp_test_train, nngp_test, cov, m)
        return pred

    def _train_cov(self, residual_factor: Tensor, cov: str) -> tuple[Tensor | None, Tensor | None]:
        # On X, T_t = V diag(fitted) V^T, so cov_t = (I - T_t) Sigma (I - T_t)^T = V E S E V^T.
        s = self._nngp_in_eigenbasis()
        v = self.eigenvectors
        out = []
        for e in residual_factor:  # one O(N^3) product per time
            w = v * e[None, :]
            if cov == "full":
                c = w @ s @ w.T
                out.append((c + c.T) / 2)
            else:
                out.append(((w @ s) * w).sum(-1).clamp_min(0))
        stacked = torch.stack(out)
        return (stacked, None) if cov == "full" else (None, stacked)

    def _test_cov(self, projected, gain, nngp_test_train, nngp_test, cov, m) -> tuple[Tensor | None, Tensor | None]:
        if self._nngp_train is None or nngp_test_train is None or nngp_test is None:
            raise ValueError("the covariance over initialisations needs nngp_train (when building the flow), "
                             "nngp_test_train = Sigma(x_test, x_train) and nngp_test = Sigma(x_test, x_test); "
                             "pass all three, or cov=None for the mean only.")
        device = projected.device
        cross = as_cross_kernel(nngp_test_train, self.n, device, "nngp_test_train")
        if cross.shape[0] != m:
            raise ValueError(f"nngp_test_train has {cross.shape[0]} rows but ntk_test_train has {m}.")
        prior = as_tensor(nngp_test, "nngp_test", device)
        if cov == "diag" and prior.dim() == 2 and tuple(prior.shape) == (m, m):
            prior = prior.diagonal()
        want = (m, m) if cov == "full" else (m,)
        if tuple(prior.shape) != want:
            raise ValueError(f"nngp_test must have shape {want} for cov={cov!r}; got {tuple(prior.shape)}.")
        s = self._nngp_in_eigenbasis()
        b = cross @ self.eigenvectors  # Sigma(x, X) V
        out = []
        for g in gain:  # per time: P = T_t(x) V = Theta(x, X) V diag(g); one (M, N, N) product
            p = projected * g[None, :]
            if cov == "full":
                half = p @ (0.5 * (s @ p.T) - b.T)  # P S P^T - P B^T - B P^T = half + half^T
                out.append(prior + half + half.T)
            else:
                out.append((prior + ((p @ s) * p).sum(-1) - 2 * (p * b).sum(-1)).clamp_min(0))
        stacked = torch.stack(out)
        return (stacked, None) if cov == "full" else (None, stacked)
