"""Kernel gradient flow on the least-squares cost, in closed form, through one eigendecomposition.

Conventions (docs/conventions.md; the paper's Section A.2). The cost is C = (1/2N) sum_i |f(x_i) - y_i|^2
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

from ..numerics import symmetric_eigh
from ._checks import as_square_kernel, as_steps, as_targets, as_tensor, as_times, check_positive, check_ridge, input_eps
from .iterative import lanczos_means, merge, mixed_limit_means
from .limit import CholeskyLimit, singular_message
from .methods import check_method, choose, lanczos_budget
from .pca import PrincipalComponents
from .prediction import Prediction
from .refined import BACKWARD_TOL
from .request import Request, parse_request, quadratic_cov, stack_or_none
from .spectral import check_stable, descent_gain, flow_gain, max_learning_rate_from


class GradientFlow:
    r"""Closed-form training dynamics of a kernel on fixed training data (any number of times).

    The (ridge-regularised) training kernel :math:`\Theta(X, X) + \text{ridge}\, I` is eigendecomposed once, in
    float64, on first need; every requested time then costs matrix products only. A prediction
    at t = inf alone, before any finite time has been asked for, uses a Cholesky solve instead
    (about 10x cheaper than the eigendecomposition, and the same numbers to round-off).

    Args:
        ntk_train: :math:`\Theta(X, X)`, shape (N, N) (tensor or numpy array; float32 is promoted).
        y_train: targets, shape (N,) or (N, k).
        nngp_train: :math:`\Sigma(X, X)`, shape (N, N), needed for covariances over initialisations.
        ridge: absolute amount added to the diagonal of :math:`\Theta(X, X)` wherever it is
            inverted or exponentiated (:math:`\Theta_r = \Theta(X, X) + \text{ridge}\, I`); the
            cross kernel :math:`\Theta(x, X)` is not changed, so at t = inf the mean is kernel
            ridge regression :math:`\Theta(x, X)\, \Theta_r^{-1} y`. The training-point
            predictions are this same function evaluated at X (at t = inf they equal y only when
            ridge = 0). neural-tangents' relative ``diag_reg`` is
            ``ridge = diag_reg * trace(ntk_train) / N``.

    A symmetric float64 ``ntk_train`` (or ``nngp_train``) tensor is kept by reference, not copied
    (an N x N copy would cost as much as the checks): do not change it in place while the flow is
    in use.

    Attributes:
        eigenvalues: (N,) eigenvalues of :math:`\Theta(X, X) + \text{ridge}\, I` (ascending).
        eigenvectors: (N, N) its orthonormal eigenvectors (columns).

    Example:
        >>> import torch, torchntk as tn
        >>> spec, n = tn.mlp(depth=3), 8
        >>> x_train, y_train, x_test = torch.randn(n, 2), torch.randn(n, 1), torch.randn(3, 2)
        >>> nngp, ntk = spec.kernels(torch.cat([x_train, x_test]))
        >>> flow = GradientFlow(ntk[:n, :n], y_train, nngp_train=nngp[:n, :n])
        >>> pred = flow.predict([0, 10, float("inf")], ntk_test_train=ntk[n:, :n],
        ...                     nngp_test_train=nngp[n:, :n], nngp_test=nngp[n:, n:])
        >>> pred.mean.shape, pred.cov.shape     # (3, M, k), (3, M, M)
        (torch.Size([3, 3, 1]), torch.Size([3, 3, 3]))
    """

    def __init__(self, ntk_train: Any, y_train: Any, *, nngp_train: Any = None, ridge: float = 0.0) -> None:
        kernel = as_square_kernel(ntk_train, "ntk_train")
        ridge = check_ridge(ridge)
        if ridge:  # a copy: the checked kernel may share memory with the caller's tensor or array
            kernel = kernel.clone()
            kernel.diagonal().add_(ridge)
        self._setup(kernel, None, y_train, nngp_train, ridge, input_eps(ntk_train))

    @classmethod
    def from_eigh(cls, eigenvalues: Any, eigenvectors: Any, y_train: Any, *, nngp_train: Any = None,
                  ridge: float = 0.0) -> GradientFlow:
        r"""Rebuild a flow from a saved ``flow.eigenvalues`` (N,) and ``flow.eigenvectors`` (N, N),
        without recomputing them; they are those of :math:`\Theta(X, X) + \text{ridge}\, I`, so pass
        the same ridge."""
        values = as_tensor(eigenvalues, "eigenvalues")
        vectors = as_tensor(eigenvectors, "eigenvectors", values.device)
        n = values.shape[0] if values.dim() == 1 else -1
        if values.dim() != 1 or tuple(vectors.shape) != (n, n):
            raise ValueError(f"eigenvalues must have shape (N,) and eigenvectors (N, N); got {tuple(values.shape)} "
                             f"and {tuple(vectors.shape)}.")
        probe = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(vectors.device)
        # One matrix-vector round trip V (V^T u) = u tests orthonormality in O(N^2), not O(N^3).
        drift = float((vectors @ (vectors.T @ probe) - probe).norm())
        if drift > math.sqrt(input_eps(eigenvectors)) * float(probe.norm()):
            raise ValueError("eigenvectors are not orthonormal; pass flow.eigenvectors as saved (columns are vectors).")
        flow = cls.__new__(cls)
        flow._setup(None, (values, vectors), y_train, nngp_train, check_ridge(ridge), input_eps(eigenvalues))
        return flow

    def _setup(self, kernel: Tensor | None, eigh: tuple[Tensor, Tensor] | None, y_train: Any, nngp_train: Any,
               ridge: float, eps: float) -> None:
        self.ridge, self._eps = ridge, eps
        self._kernel, self._eigh = kernel, None
        self._limit = None if kernel is None else CholeskyLimit(kernel, eps)
        reference = kernel if kernel is not None else eigh[0]
        self.n = n = reference.shape[0]
        self.y_train = as_targets(y_train, n, reference.device)
        self._nngp_train = None
        if nngp_train is not None:
            self._nngp_train = as_square_kernel(nngp_train, "nngp_train", reference.device)
            if self._nngp_train.shape[0] != n:
                raise ValueError(f"nngp_train has shape {tuple(self._nngp_train.shape)} but ntk_train has N = {n}.")
        self._nngp_eigenbasis: Tensor | None = None
        if eigh is not None:
            self._use_eigh(*eigh)

    def _use_eigh(self, eigenvalues: Tensor, eigenvectors: Tensor) -> None:
        # numpy's matrix_rank rule: eigenvalues below N * eps * lambda_max are rounding noise.
        self._tol = self.n * self._eps * max(float(eigenvalues.abs().max()), 1e-300)
        lowest = float(eigenvalues.min()) - self.ridge
        if lowest < -self._tol:
            raise ValueError(f"ntk_train is not positive semi-definite: its smallest eigenvalue is {lowest:.3g} "
                             f"(largest {float(eigenvalues.max()):.3g}); a kernel matrix K(X, X) never is. Check it "
                             "is the kernel of the training points against themselves.")
        # One memory layout whatever the source (LAPACK returns column-major, a saved array is row-major), so
        # that a rebuilt flow multiplies in the same order and gives the same bits.
        eigenvectors = eigenvectors.contiguous()
        self._eigh = (eigenvalues, eigenvectors)
        self._y_eigenbasis = eigenvectors.T @ self.y_train

    def _decomposed(self) -> tuple[Tensor, Tensor]:
        if self._eigh is None:
            self._use_eigh(*symmetric_eigh(self._kernel))
        return self._eigh

    # -- public ---------------------------------------------------------------------

    @property
    def eigenvalues(self) -> Tensor:
        r"""(N,) eigenvalues of :math:`\Theta(X, X) + \text{ridge}\, I`, ascending (computed on first access)."""
        return self._decomposed()[0]

    @property
    def eigenvectors(self) -> Tensor:
        r"""(N, N) orthonormal eigenvectors (columns) of :math:`\Theta(X, X) + \text{ridge}\, I`."""
        return self._decomposed()[1]

    @property
    def max_learning_rate(self) -> float:
        r"""The largest learning rate, :math:`2N / \lambda_{\max}`, for which gradient descent on
        :math:`C = \frac{1}{2N} \sum_i \lVert f(x_i) - y_i \rVert^2` converges (iff lr is below it)."""
        return max_learning_rate_from(self.eigenvalues, self.n)

    def principal_components(self) -> PrincipalComponents:
        """Kernel principal components of the training kernel, from the stored eigendecomposition."""
        return PrincipalComponents.from_eigh(self.eigenvalues, self.eigenvectors)

    def predict(self, t: Any, *, ntk_test_train: Any = None, nngp_test_train: Any = None, nngp_test: Any = None,
                cov: str | None = "full", f0_train: Any = None, f0_test: Any = None,
                train_cov: bool = True, method: str = "auto") -> Prediction:
        r"""Outputs under gradient flow at times ``t`` (scalar or (T,); float("inf") for the limit).

        Args:
            t: times in the paper's units (t = lr * steps); t = inf is exact (:math:`1 / \lambda`,
                or a Cholesky solve when only t = inf is asked before any eigendecomposition).
            ntk_test_train: :math:`\Theta(x, X)`, shape (M, N), for predictions on M test points.
            nngp_test_train: :math:`\Sigma(x, X)`, shape (M, N). With nngp_train and nngp_test
                it gives the test covariance.
            nngp_test: :math:`\Sigma(x, x)`, shape (M, M), or (M,) when cov="diag".
            cov: "full" (covariance matrices), "diag" (variances only: no M x M matrix) or None.
            f0_train: one network's outputs at initialisation on the training points, (N, k):
                then the prediction is that network's trajectory
                :math:`f_0 + T_t (y - f_0(X))`, without covariance.
            f0_test: the same network's outputs at initialisation on the test points, (M, k).
            train_cov: also compute the covariance on the training points (:math:`O(N^3)` per time).
            method: "auto" (default), "eigh", "cholesky", "mixed" or "lanczos": see
                `torchntk.dynamics.methods` for each, its accuracy check and the auto rules. Every
                method other than "eigh" checks its result a posteriori and falls back to the exact
                path; ``pred.method`` and ``pred.diagnostics`` say what ran.

        Returns:
            A `Prediction` with mean (T, M, k), cov (T, M, M) or var (T, M), train_mean (T, N, k),
            train_cov (T, N, N) or train_var (T, N), method and diagnostics.
        """
        times = as_times(t)
        method = check_method(method)
        request = parse_request(self.y_train, self._nngp_train, ntk_test_train, nngp_test_train, nngp_test, cov,
                                f0_train, f0_test, train_cov)
        infinite = torch.isinf(times)
        finite_index = (~infinite).nonzero().flatten()
        t_max = float(times[finite_index].max()) if finite_index.numel() else None
        wants_cov = request.train_cov or request.prior is not None
        decomposed = self._eigh is not None or self._kernel is None
        plan = choose(method, n=self.n, k=self.y_train.shape[1], t_max_finite=t_max,
                      any_infinite=bool(infinite.any()), wants_cov=wants_cov, decomposed=decomposed)
        if plan.finite == "lanczos" and self._kernel is None:
            raise ValueError("method='lanczos' needs the training kernel; this flow was rebuilt from its "
                             "eigendecomposition (from_eigh): use method='eigh' or 'auto'.")
        diagnostics: dict = {"reason": plan.reason}
        if plan.finite in (None, "eigh") and plan.infinite in (None, "eigh"):
            return self._exact(times, request, diagnostics)
        parts, labels = [], []
        if plan.finite == "lanczos":
            labels.append(self._lanczos_part(times, finite_index, request, diagnostics, parts))
        elif plan.finite == "eigh":
            parts.append((finite_index, self._exact(times[finite_index], request, {})))
            labels.append("eigh")
        if plan.infinite is not None:
            labels.append(self._limit_part(times, infinite.nonzero().flatten(), request, plan.infinite,
                                           diagnostics, parts))
        pred = merge(times.to(self.y_train.device), parts)
        pred.method = " + ".join(labels)
        pred.diagnostics = diagnostics
        return pred

    def _exact(self, times: Tensor, request: Request, diagnostics: dict) -> Prediction:
        if bool(torch.isinf(times).all()) and self._eigh is None:
            pred = self._limit.predict(times.shape[0], request, self.ridge, self._nngp_train)
            pred.method = "cholesky"
        else:
            if bool(torch.isinf(times).any()):
                self._require_invertible("t = inf")
            pred = self._assemble(times, flow_gain(self.eigenvalues, times, self.n), request)
            pred.method = "eigh"
        pred.diagnostics = diagnostics
        return pred

    def _lanczos_part(self, times: Tensor, index: Tensor, request: Request, diagnostics: dict, parts: list) -> str:
        """Finite times by block Lanczos; those whose residual estimate misses the tolerance by eigh."""
        kernel = self._kernel
        budget = max(lanczos_budget(self.n, self.y_train.shape[1]), 8)
        pred, converged, info = lanczos_means(lambda v: kernel @ v, times[index], request, self.n, self.ridge,
                                              max_steps=budget)
        diagnostics.update(info)
        if bool(converged.all()):
            parts.append((index, pred))
            return "lanczos"
        good, bad = index[converged], index[~converged]
        diagnostics["fallback"] = (f"{int((~converged).sum())} of {index.numel()} times missed the Lanczos "
                                   f"tolerance after {info['lanczos_steps']} steps: recomputed by eigh")
        if good.numel():
            parts.append((good, _select(pred, converged)))
        parts.append((bad, self._exact(times[bad], request, {})))
        return "lanczos -> eigh"

    def _limit_part(self, times: Tensor, index: Tensor, request: Request, choice: str, diagnostics: dict,
                    parts: list) -> str:
        count = index.numel()
        # An eigendecomposition made on the way (a Lanczos fallback) serves t = inf at no cost; an explicit
        # "cholesky" is honoured.
        if choice == "eigh" or (choice == "mixed" and self._eigh is not None):
            parts.append((index, self._exact(times[index], request, {})))
            return "eigh"
        if choice == "mixed":
            pred, info = mixed_limit_means(self._kernel, count, request, self.ridge)
            diagnostics.update(info)
            if pred is not None:
                parts.append((index, pred))
                return "mixed-cholesky"
            diagnostics["fallback"] = (f"float32 Cholesky refinement stopped at backward error "
                                       f"{info['backward_error']:.2g} > {BACKWARD_TOL:g}: float64 Cholesky")
            parts.append((index, self._limit.predict(count, request, self.ridge, self._nngp_train)))
            return "mixed-cholesky -> cholesky"
        parts.append((index, self._limit.predict(count, request, self.ridge, self._nngp_train)))
        return "cholesky"

    def predict_steps(self, steps: Any, lr: float, *, ntk_test_train: Any = None, nngp_test_train: Any = None,
                      nngp_test: Any = None, cov: str | None = "full", f0_train: Any = None, f0_test: Any = None,
                      train_cov: bool = True) -> Prediction:
        r"""Outputs after exactly ``steps`` steps of full-batch gradient descent with rate ``lr``.

        The same as `predict` with :math:`e^{-t \Theta / N}` replaced by
        :math:`(I - \eta\, \Theta / N)^{\text{steps}}` (:math:`\eta` = ``lr``); the returned times
        are lr * steps. It tends to `predict` at t = lr * steps as lr -> 0.
        Warns when lr >= `max_learning_rate` (the iteration does not converge).
        """
        steps = as_steps(steps)
        lr = check_positive(lr, "lr")
        request = parse_request(self.y_train, self._nngp_train, ntk_test_train, nngp_test_train, nngp_test, cov,
                                f0_train, f0_test, train_cov)
        check_stable(self.eigenvalues, lr, self.n, steps)
        if bool(torch.isinf(steps).any()):
            self._require_invertible("steps = inf")
        gain = descent_gain(self.eigenvalues, steps, lr, self.n)
        return self._assemble(steps * lr, gain, request)

    # -- internals ------------------------------------------------------------------

    def _require_invertible(self, what: str) -> None:
        low, high = float(self.eigenvalues.min()), float(self.eigenvalues.max())
        if low <= self._tol:
            raise ValueError(singular_message(f"smallest eigenvalue {low:.3g}, largest {high:.3g}", what, high))

    def _nngp_in_eigenbasis(self) -> Tensor:
        if self._nngp_eigenbasis is None:
            v = self.eigenvectors
            self._nngp_eigenbasis = v.T @ self._nngp_train @ v
        return self._nngp_eigenbasis

    def _assemble(self, times: Tensor, gain: Tensor, r: Request) -> Prediction:
        values, v = self._decomposed()
        z = self._y_eigenbasis if r.base_train is None else v.T @ r.residual
        # Fraction of the residual fitted along each eigenvector on X: 1 - exp(-t lambda / N) without ridge.
        fitted = (values - self.ridge)[None, :] * gain
        train_mean = v @ (fitted[:, :, None] * z)
        if r.base_train is not None:
            train_mean = train_mean + r.base_train
        pred = Prediction(t=times.to(values.device), train_mean=train_mean)
        if r.train_cov:
            spread = self._train_spread(fitted, r.cov)
            pred.train_cov, pred.train_var = (spread, None) if r.cov == "full" else (None, spread)
        if r.cross is None:
            return pred
        projected = r.cross @ v  # Theta(x, X) V, shared by every time
        pred.mean = projected @ (gain[:, :, None] * z)
        if r.base_test is not None:
            pred.mean = pred.mean + r.base_test
        if r.prior is not None:
            s, b = self._nngp_in_eigenbasis(), r.nngp_cross @ v  # V^T Sigma V, Sigma(x, X) V
            # Per time, T_t(x) V = Theta(x, X) V diag(g): one (M, N) x (N, N) product.
            spread = [quadratic_cov(projected * g[None, :], s, b.T, r.prior, r.cov) for g in gain]
            pred.cov, pred.var = (stack_or_none(spread), None) if r.cov == "full" else (None, stack_or_none(spread))
        return pred

    def _train_spread(self, fitted: Tensor, cov: str) -> Tensor:
        """On X, T_t = V diag(fitted) V^T, so cov_t = (I - T_t) Sigma (I - T_t)^T = (V E) S (V E)^T
        with E = diag(1 - fitted) and S = V^T Sigma V: one O(N^3) product per time."""
        s, v = self._nngp_in_eigenbasis(), self.eigenvectors
        out = []
        for f in fitted:
            w = v * (1 - f)[None, :]
            ws = w @ s
            out.append((ws @ w.T + w @ ws.T) / 2 if cov == "full" else (ws * w).sum(-1).clamp_min(0))
        return torch.stack(out)


def _select(pred: Prediction, keep: Tensor) -> Prediction:
    """The prediction at the times ``keep`` (a (T,) boolean mask) only."""
    return Prediction(t=pred.t[keep], mean=None if pred.mean is None else pred.mean[keep],
                      train_mean=None if pred.train_mean is None else pred.train_mean[keep])
