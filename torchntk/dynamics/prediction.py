"""The result of a dynamics prediction: outputs and their spread at each requested time."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from torch import Tensor


@dataclass
class Prediction:
    r"""Predicted outputs at times ``t`` on test points (M of them) and on the N training points.

    Attributes:
        t: times (T,), in the paper's units (t = lr * steps for gradient descent with the cost
            :math:`C = \frac{1}{2N} \sum_i \lVert f(x_i) - y_i \rVert^2`); for a discrete
            prediction, the step counts times lr.
        mean: (T, M, k) outputs on the test points, or None without test kernels. Over random
            initialisations this is the mean :math:`T_t(x)\, y`; when the initial outputs f0 of
            one network were given, it is that network's trajectory
            :math:`f_0(x) + T_t(x) (y - f_0(X))`.
        cov: (T, M, M) covariance over initialisations, shared by the k outputs (the limit kernel
            is scalar, Theorem 1); None when not asked (cov="diag" or None), without the NNGP
            kernels, or when f0 was given (one network's trajectory is deterministic).
        var: (T, M) its diagonal, filled when cov="diag" (clamped at 0 against rounding).
        train_mean: (T, N, k) the same on the training points.
        train_cov: (T, N, N) covariance on the training points (cov="full" and nngp_train given).
        train_var: (T, N) its diagonal (cov="diag").
        method: how it was computed, e.g. "eigh", "cholesky", "mixed-cholesky", "lanczos", or
            "lanczos + mixed-cholesky" (one method for the finite times, one for t = inf); a
            fallback to the exact path reads "lanczos -> eigh" (see `GradientFlow.predict`).
        diagnostics: the a-posteriori checks behind ``method``: Lanczos steps and estimated errors,
            refinement steps and backward errors, and why a fallback happened (plain Python values).
    """

    t: Tensor
    mean: Tensor | None = None
    cov: Tensor | None = None
    var: Tensor | None = None
    train_mean: Tensor | None = None
    train_cov: Tensor | None = None
    train_var: Tensor | None = None
    method: str | None = None
    diagnostics: dict | None = None

    def __repr__(self) -> str:
        # A summary: the arrays can hold millions of entries, which print() should not dump.
        parts = [f"t={_times(self.t)}"]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "t" and hasattr(value, "shape"):
                parts.append(f"{f.name}: {tuple(value.shape)}")
        if self.method is not None:
            parts.append(f"method={self.method!r}")
        return f"Prediction({', '.join(parts)})"

    def map(self, fn: Any) -> Prediction:
        """A copy with ``fn`` applied to every array field (e.g. conversion to numpy)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = fn(value) if isinstance(value, Tensor) else value
        return Prediction(**out)


def _times(t: Any) -> str:
    values = [float(v) for v in t.reshape(-1)[:6].tolist()]
    shown = ", ".join(f"{v:g}" for v in values)
    more = len(t.reshape(-1)) - len(values)
    return f"[{shown}{f', ... ({more} more)' if more > 0 else ''}]"
