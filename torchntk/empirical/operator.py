"""The empirical NTK on a set of inputs as a linear operator that never forms the kernel.

For inputs x_1..x_N and a model with k outputs, Theta is the (N k, N k) matrix with entries
Theta[(i, a), (j, b)] = grad f_a(x_i) . grad f_b(x_j) (rows in the order of ``v.reshape(N, k)``).
A product is two passes over chunks of the inputs, with no Jacobian and no kernel stored:

    g = J^T v = sum_j sum_b v_jb grad f_b(x_j)      one vector-Jacobian product per chunk (P numbers)
    (Theta v)_i = J_i g                              one Jacobian-vector product per chunk

so memory is P per vector plus one chunk's activations, and a product costs about two forward
and two backward passes over the N inputs, whatever N. ``outputs="trace"`` is the (N, N) operator
of (1/k) sum_a Theta_aa (one g per output a), ``outputs="pntk"`` the (N, N) operator of the pNTK
(`torchntk.empirical.pntk`). Krylov methods need only these products: `NTKOperator.to_scipy`
gives a scipy LinearOperator for scipy.sparse.linalg (cg, minres, eigsh, ...), and
`NTKOperator.top_eigenvalues` the largest eigenvalues by Lanczos.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import jvp, vjp, vmap

from . import (
    NTK_OUTPUTS,
    _build,
    _check_common,
    _Columns,
    _inputs,
    _model_dtype_device,
    _output_count,
    _unchanged,
)
from .functional import FunctionalModel
from .keywords import Inputs
from .pntk import pntk_module
from .selection import Selection, restrict, select

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # torch < 2.3: no backend choice, and no fused attention kernels to avoid
    SDPBackend = sdpa_kernel = None

__all__ = ["NTKOperator", "ntk_operator"]

ROWS_PER_PASS = 1024
"""Default inputs times vectors in flight per chunk: a chunk holds about ROWS_PER_PASS / M inputs
when M vectors (m, or m k for the trace) go through it together."""


def ntk_operator(model: nn.Module, x: Any, *, outputs: str = "full", params: Selection = None,
                 batch_size: int | None = None, forward_kwargs: Any = None) -> NTKOperator:
    """The empirical NTK of ``model`` on x as an `NTKOperator` (see the module docstring).

    Args:
        model: any torch.nn.Module mapping (N, ...) to (N, k) or (N,), with the checks of
            `torchntk.empirical_ntk` (eval mode where it matters; the model is left unchanged by
            every product). The operator holds the model, not a copy: a product reads the
            parameters as they are when it runs.
        x: the N inputs (N, ...), a tensor of the model's dtype and device or a numpy array;
            copied, so later changes to x do not change the operator.
        outputs: "full", the (N k, N k) operator of Theta; "trace", the (N, N) operator of
            (1/k) sum_a Theta_aa; "pntk", the (N, N) operator of (1/k) sum_{a,b} Theta_ab.
            Outputs of shape (N,) give an (N, N) operator in every case.
        params: the parameters the kernel sums over (names, nn.Parameter objects or a predicate
            name -> bool, as in `torchntk.empirical_ntk`); None for every trainable one.
        batch_size: inputs per chunk; by default about ROWS_PER_PASS (1024) / M for M vectors in
            flight.
        forward_kwargs: per-example keyword tensors of the model's forward (``model(x, **kw)``),
            one dict name -> tensor with one row per input, sliced with x into every chunk (as
            in `torchntk.empirical_ntk`); kept with x, so later changes to them do not change
            the operator either.

    >>> import torch, torchntk as tn
    >>> net = tn.mlp(depth=2).network(width=8, out_features=2, seed=0, dtype=torch.float64)
    >>> x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> op = tn.ntk_operator(net, x)
    >>> op.shape
    (10, 10)
    >>> K = tn.empirical_ntk(net, x).permute(0, 2, 1, 3).reshape(10, 10)
    >>> v = torch.ones(5, 2, dtype=torch.float64)
    >>> bool(torch.allclose(op @ v, (K @ v.reshape(10)).reshape(5, 2)))
    True
    """
    if outputs not in NTK_OUTPUTS:
        raise ValueError(f"outputs must be one of {NTK_OUTPUTS} ('full': (N k, N k); 'trace' and 'pntk': (N, N)), "
                         f"got {outputs!r}.")
    _check_common(model, "trace" if outputs == "pntk" else outputs, batch_size)
    chosen = select(model, params)
    _build(model, x)
    dtype, device = _model_dtype_device(model)
    _, t, _ = _inputs(x, None, dtype, device, False, forward_kwargs, model)
    with _unchanged(model):
        k, vector = _output_count(model, t)
    inner: nn.Module = model
    if vector:
        inner, outputs = _Columns(model), "full"
    elif outputs == "pntk" or k == 1:
        inner = model if k == 1 else pntk_module(model, k, dtype, device, keywords=isinstance(t, Inputs))
        k, outputs = 1, "full"
    return NTKOperator(model, inner, chosen, t.clone(), k, outputs == "full", batch_size)


def _math_attention() -> contextlib.AbstractContextManager:
    """Attention by the math backend: fused kernels (CPU flash attention) have no batching rule
    for vmap and no second derivative; the math backend computes the same attention from
    differentiable, batchable operations."""
    return sdpa_kernel(SDPBackend.MATH) if sdpa_kernel is not None else contextlib.nullcontext()


class NTKOperator:
    """Products with the empirical NTK on fixed inputs (made by `ntk_operator`).

    ``op @ v`` (or ``op.matvec(v)``) takes v of shape (n,), (N, k) (full operator only) or
    (n, m) for m vectors at once, with n = N k (full) or N (trace, pNTK, one output), as a tensor
    or a numpy array, and returns the same shape and kind. ``shape`` is (n, n). The Jacobian-vector
    products use forward-mode AD (torch.func.jvp); for a model it does not support (the fused
    path of an eval-mode nn.TransformerEncoderLayer, for one) they are taken as the transpose of
    the vector-Jacobian product (double backward, with attention by the math backend), which gives
    the same numbers to round-off.
    """

    def __init__(self, model: nn.Module, inner: nn.Module, chosen: set[int] | None, x: Tensor | Inputs, k: int,
                 full: bool, batch_size: int | None) -> None:
        self.model, self._inner, self._chosen, self._x, self.k, self.full = model, inner, chosen, x, k, full
        self._batch_size = batch_size
        self._fmodel = restrict(FunctionalModel(inner), chosen)
        self._forward_mode = True
        self.n_inputs = x.shape[0]
        n = self.n_inputs * (k if full else 1)
        self.shape = (n, n)
        self.dtype, self.device = x.dtype, x.device

    def __repr__(self) -> str:
        what = "full" if self.full else "trace"
        return f"NTKOperator(shape={self.shape}, inputs={self.n_inputs}, outputs={self.k}, {what})"

    def __matmul__(self, v: Any) -> Any:
        return self.matvec(v)

    def matvec(self, v: Any) -> Any:
        """Theta v for v of shape (n,), (N, k) or (n, m) (see the class docstring)."""
        numpy_in = isinstance(v, np.ndarray)
        t = self._as_tensor(v)
        n, big_n, k = self.shape[0], self.n_inputs, self.k
        if t.dim() == 1 and t.shape[0] == n:
            block = t.reshape(n, 1)
        elif t.dim() == 2 and self.full and t.shape == (big_n, k):
            block = t.reshape(n, 1)
        elif t.dim() == 2 and t.shape[0] == n and t.shape[1] >= 1:
            block = t
        else:
            forms = f"({n},), ({big_n}, {k}) or ({n}, m)" if self.full and k > 1 else f"({n},) or ({n}, m)"
            raise ValueError(f"v must have shape {forms} for this operator on {big_n} inputs with "
                             f"{k} output(s); got {tuple(t.shape)}.")
        if not bool(torch.isfinite(block).all()):
            raise ValueError("v has NaN or infinite entries; the product would be NaN throughout.")
        _check_common(self.model, "full", None)  # the model may have been put in train mode since
        # the parameters as they are now (a module may have been given new ones since)
        self._fmodel = restrict(FunctionalModel(self._inner), self._chosen)
        if not self._fmodel.params:
            raise ValueError("none of the parameters this operator was made for is a trainable parameter of the "
                             "model any more: make a new operator.")
        with _unchanged(self.model), torch.no_grad(), _math_attention():
            out = self._products(block).reshape(t.shape)
        return out.cpu().numpy() if numpy_in else out

    def _as_tensor(self, v: Any) -> Tensor:
        if isinstance(v, np.ndarray):
            if v.dtype.kind not in "biuf":
                raise TypeError(f"v must hold real numbers; got a numpy array of dtype {v.dtype}.")
            return torch.from_numpy(np.ascontiguousarray(v)).to(device=self.device, dtype=self.dtype)
        if not isinstance(v, Tensor):
            raise TypeError(f"v must be a torch.Tensor or a numpy array, got {type(v).__name__}.")
        if v.dtype != self.dtype or v.device != self.device:
            raise TypeError(f"v must have the model's dtype and device ({self.dtype}, {self.device}); got "
                            f"{v.dtype} on {v.device}: use v.to(dtype={self.dtype}, device='{self.device}').")
        return v

    def _products(self, block: Tensor) -> Tensor:
        """Theta @ block for block (n, m)."""
        big_n, k, m = self.n_inputs, self.k, block.shape[1]
        if self.full:
            cot = block.reshape(big_n, k, m).permute(2, 0, 1)                   # (m, N, k)
        else:
            eye = torch.eye(k, dtype=self.dtype, device=self.device)
            # output a's own vector: cotangent v e_a, so g_a = sum_j v_j grad f_a(x_j)
            cot = (block.t()[:, None, :, None] * eye[None, :, None, :]).reshape(m * k, big_n, k)
        out = self._push(self._pull(cot))                                     # (M, N, k)
        if self.full:
            return out.permute(1, 2, 0).reshape(big_n * k, m)
        return out.reshape(m, k, big_n, k).diagonal(dim1=1, dim2=3).mean(-1).t()  # (N, m)

    def _chunks(self, vectors: int) -> list[slice]:
        size = self._batch_size or max(1, ROWS_PER_PASS // vectors)
        return [slice(s, min(s + size, self.n_inputs)) for s in range(0, self.n_inputs, size)]

    def _pull(self, cot: Tensor) -> dict[str, Tensor]:
        """g = J^T c for each of the M cotangents c (M, N, k): a dict of (M, *shape) tensors."""
        f, params = self._fmodel, self._fmodel.params
        g = {name: torch.zeros((cot.shape[0], *p.shape), dtype=p.dtype, device=p.device) for name, p in params.items()}
        for rows in self._chunks(cot.shape[0]):
            xc = self._x[rows]
            _, pullback = vjp(lambda p, xc=xc: f(p, xc), params)
            (part,) = vmap(pullback)(cot[:, rows])
            for name in g:
                g[name] += part[name]
        return g

    def _push(self, g: dict[str, Tensor]) -> Tensor:
        """J t for each of the M tangents t of g: (M, N, k)."""
        vectors = next(iter(g.values())).shape[0]
        parts = []
        for rows in self._chunks(vectors):
            xc = self._x[rows]
            if self._forward_mode:
                try:
                    parts.append(self._push_forward(xc, g))
                    continue
                except (RuntimeError, NotImplementedError):
                    self._forward_mode = False   # forward-mode AD unsupported here: the double-backward form
            try:
                parts.append(self._push_reverse(xc, g))
            except (RuntimeError, NotImplementedError) as exc:
                raise ValueError("the operator needs Jacobian-vector products of the model, by forward-mode AD "
                                 "(torch.func.jvp) or by double backward, and this model supports neither: "
                                 f"{type(exc).__name__}: {exc}") from exc
        return torch.cat(parts, dim=1)

    def _push_forward(self, xc: Tensor | Inputs, g: dict[str, Tensor]) -> Tensor:
        f, params = self._fmodel, self._fmodel.params

        def one(tangent: dict[str, Tensor]) -> Tensor:
            return jvp(lambda p: f(p, xc), (params,), (tangent,))[1]

        with warnings.catch_warnings():
            # torch's forward-mode AD loads its decompositions through torch.jit.script on first use
            warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=DeprecationWarning)
            return vmap(one)(g)

    def _push_reverse(self, xc: Tensor | Inputs, g: dict[str, Tensor]) -> Tensor:
        f, params = self._fmodel, self._fmodel.params

        def one(tangent: dict[str, Tensor]) -> Tensor:
            out, pullback = vjp(lambda p: f(p, xc), params)
            # u -> J^T u is linear, so its own vector-Jacobian product along the tangent is J tangent
            _, transpose = vjp(lambda u: pullback(u)[0], torch.zeros_like(out))
            return transpose(tangent)[0]

        return vmap(one)(g)

    def to_scipy(self) -> Any:
        """A scipy.sparse.linalg.LinearOperator of shape (n, n), float64 numpy in and out
        (vectors (n,) and blocks (n, m)); symmetric, so its adjoint is itself."""
        from scipy.sparse.linalg import LinearOperator

        def apply(v: np.ndarray) -> np.ndarray:
            shape = v.shape
            block = np.asarray(v, dtype=np.float64).reshape(self.shape[0], -1)
            out = self.matvec(torch.from_numpy(block).to(device=self.device, dtype=self.dtype))
            return out.to(torch.float64).cpu().numpy().reshape(shape)

        return LinearOperator(self.shape, matvec=apply, rmatvec=apply, matmat=apply, rmatmat=apply,
                              dtype=np.float64)

    def top_eigenvalues(self, m: int, *, tol: float | None = None, max_iter: int | None = None,
                        seed: int = 0) -> Tensor:
        """The m largest eigenvalues of the operator, descending, as a float64 tensor (m,).

        By the implicitly restarted Lanczos method of ARPACK (scipy.sparse.linalg.eigsh on
        `to_scipy`, which="LA", float64): restarts keep memory at a few tens of n-vectors and
        converged vectors are locked, the safeguards a plain Lanczos with full
        reorthogonalisation lacks (it keeps every Lanczos vector and cannot restart). The
        products with the kernel dominate the cost either way. The start vector is a standard
        Gaussian from ``seed``, so the result is reproducible.

        Args:
            m: how many, 1 <= m < n (for all n eigenvalues form the kernel with
                `torchntk.empirical_ntk` and use torch.linalg.eigvalsh).
            tol: relative accuracy of each eigenvalue; None: float64 machine precision for a
                float64 model, else 10 eps of the model's dtype (1.2e-6 for float32: products
                accurate to about eps cannot give more, and asking for it costs restarts).
            max_iter: most restarts (ARPACK's maxiter; None: its default, 10 n).
            seed: seed of the start vector.
        """
        from scipy.sparse.linalg import eigsh

        n = self.shape[0]
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m < n:
            raise ValueError(f"m must be an integer with 1 <= m < {n} (the operator's size); got {m!r}. For all "
                             "eigenvalues form the kernel with empirical_ntk and use torch.linalg.eigvalsh.")
        if tol is None:
            tol = 0.0 if self.dtype == torch.float64 else 10 * torch.finfo(self.dtype).eps
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
            raise ValueError(f"tol must be a number >= 0 (0: float64 machine precision) or None; got {tol!r}.")
        if max_iter is not None and (isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1):
            raise ValueError(f"max_iter must be a positive integer or None; got {max_iter!r}.")
        start = np.random.default_rng(seed).standard_normal(n)
        values = eigsh(self.to_scipy(), k=m, which="LA", tol=tol, maxiter=max_iter, v0=start,
                       return_eigenvectors=False)
        return torch.from_numpy(np.sort(values)[::-1].copy())
