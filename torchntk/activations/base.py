"""The activation layer: an elementwise nonlinearity and its two Gaussian expectations.

For a centred Gaussian pair (u, v) with Var u = var1, Var v = var2, Cov(u, v) = cov, the
kernel recursion (Proposition 1, Theorem 1) needs

    E[sigma(u) sigma(v)]      (the next layer's Sigma, before sigma_w^2 and beta^2)
    E[sigma'(u) sigma'(v)]    (SigmaDot, before sigma_w^2)

`Activation` computes both for any callable by a 2-D polar quadrature (quadrature.py), taking sigma'
from autograd unless a derivative is supplied. Subclasses with closed forms override
`expectations`; `quadrature_expectations` stays available on every activation so closed
forms can be checked against it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .quadrature import bivariate_expectation


def elementwise_grad(fn: Callable[[Tensor], Tensor], x: Tensor, *context: Tensor) -> Tensor:
    """d fn(x) / dx for a function acting elementwise on x (other tensors in ``context`` may be
    closed over); the result stays differentiable when x or ``context`` require grad."""
    from torch._C._functorch import is_functorch_wrapped_tensor

    if is_functorch_wrapped_tensor(x):  # inside torch.func transforms: forward mode composes
        return torch.func.jvp(fn, (x,), (torch.ones_like(x),))[1]
    keep_graph = torch.is_grad_enabled() and any(t.requires_grad for t in (x, *context))
    with torch.enable_grad():
        # the derivative in x alone, the context held fixed: a view of x is a node of its own, so the
        # paths from x through the context (variances read off the kernel's diagonal) are not summed in
        z = x.view_as(x) if x.requires_grad and keep_graph else x.detach().requires_grad_(True)
        (dy,) = torch.autograd.grad(fn(z).sum(), z, create_graph=keep_graph)
    return dy


DEFAULT_NODES = None
"""Quadrature order of `Activation`: None picks each kernel entry's order from its variances
(quadrature.ADAPTIVE_ORDERS), which keeps E[s s] and E[s' s'] within 1e-6 relative for every
smooth nonlinearity named here (tanh, sigmoid, softplus, silu, elu) at variances up to 30, at
1.5x the old fixed default's cost for variances <= 10 and 3x above. An integer fixes the
order. Measured relative error of E[s(u) s(v)] against scipy's adaptive 2-D quadrature
(tests/activations/test_quadrature.py), at variances ~1 / at variances 10-30:

    nodes   tanh            sigmoid         softplus        silu            elu             relu (as a callable)
    16      2e-4 / 1e-3     2e-5 / 2e-4     1e-4 / 6e-4     6e-4 / 8e-4     3e-4 / 2e-3     3e-4
    32      1e-7 / 1e-6     3e-9 / 5e-8     3e-9 / 6e-8     6e-11 / 3e-7    6e-9 / 1e-6     1e-9
    64      4e-15 / 4e-11   1e-15 / 5e-13   2e-15 / 2e-13   2e-15 / 5e-13   2e-14 / 5e-13

The derivative term E[s'(u) s'(v)] is harder (sech^2 is sharply peaked at large variance):
at 32 fixed nodes it is off by up to 7e-5 for tanh at variance 30, hence the adaptive default.
Convergence is geometric in the order, kinks at 0 included; cost grows as nodes^2 / 2.
"""


MAX_NODES = 512
"""Largest fixed quadrature order: a million evaluations per kernel entry, far past the accuracy
the adaptive order reaches (see the table above)."""


class Activation:
    r"""Elementwise nonlinearity layer, e.g. ``Activation(torch.tanh)``: a nonlinearity
    :math:`\sigma` and its two Gaussian expectations, :math:`\mathbb E[\sigma(u)\, \sigma(v)]`
    for the NNGP and :math:`\mathbb E[\sigma'(u)\, \sigma'(v)]` for the NTK, here by a
    two-dimensional quadrature (the subclasses have closed forms).

    Args:
        fn: :math:`\sigma`, mapping a tensor to a tensor of the same shape, elementwise;
            Lipschitz for the paper's theorems to apply.
        derivative: :math:`\sigma'` as a callable; by default taken from autograd on ``fn``.
        name: shown in reprs and reports; defaults to ``fn.__name__``.
        nodes: quadrature order (radial nodes) for the expectations (cost about
            :math:`4\, \text{nodes}^2` evaluations per kernel entry), or None (the default) to
            choose it per entry from the variances; see DEFAULT_NODES for measured accuracies.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], derivative: Callable[[Tensor], Tensor] | None = None,
                 *, name: str | None = None, nodes: int | None = DEFAULT_NODES) -> None:
        self.fn = fn
        self.derivative = derivative
        self.name = name if name is not None else getattr(fn, "__name__", type(fn).__name__)
        self.nodes = nodes

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def __repr__(self) -> str:
        return f"Activation({self.name}, nodes={'auto' if self.nodes is None else self.nodes})"

    # -- derivative -------------------------------------------------------------------

    def grad(self, x: Tensor) -> Tensor:
        r""":math:`\sigma'(x)`, elementwise; differentiable in x when x requires grad."""
        if self.derivative is not None:
            return self.derivative(x)
        return elementwise_grad(self.fn, x)

    # -- Gaussian expectations ------------------------------------------------------

    def expectations(self, var1: Tensor, var2: Tensor, cov: Tensor, derivative: bool = True,
                     overwrite: bool = False) -> tuple[Tensor, Tensor | None]:
        r""":math:`\big(\mathbb E[\sigma(u)\, \sigma(v)],\ \mathbb E[\sigma'(u)\, \sigma'(v)]\big)`
        for the centred Gaussian pair :math:`(u, v)` of variances ``var1``, ``var2`` and
        covariance ``cov``.

        Args:
            var1: the variances of u, shape (n1, 1); or (n,) for the diagonal.
            var2: the variances of v, shape (1, n2); or (n,).
            cov: the covariances, shape (n1, n2); or (n,).
            derivative: whether to compute the second expectation (None in its place if not).
            overwrite: lets an implementation reuse cov's storage (the caller no longer needs
                it); only done when autograd is off.

        Returns:
            Two tensors of cov's shape (the second None when ``derivative`` is False).
        """
        return self.quadrature_expectations(var1, var2, cov, derivative)

    def quadrature_expectations(self, var1: Tensor, var2: Tensor, cov: Tensor,
                                derivative: bool = True) -> tuple[Tensor, Tensor | None]:
        """The same expectations by the polar quadrature of order ``self.nodes`` (None: adaptive)."""
        ess = bivariate_expectation(self.fn, self.fn, var1, var2, cov, self.nodes)
        edd = bivariate_expectation(self.grad, self.grad, var1, var2, cov, self.nodes) if derivative else None
        return ess, edd

    # -- checks ---------------------------------------------------------------------

    def check(self) -> None:
        """Raise TypeError unless ``fn`` (and ``derivative``) map tensors to same-shape tensors."""
        probe = torch.linspace(-2.0, 2.0, 5, dtype=torch.float64).reshape(5, 1)
        for label, f in (("activation", self.fn), ("derivative", self.derivative)):
            if f is None:
                continue
            try:
                out = f(probe)
            except Exception as exc:  # a user's callable can fail in any way
                raise TypeError(f"{label} {self.name!r} failed on a float64 tensor of shape (5, 1): "
                                f"{type(exc).__name__}: {exc}. It must map a torch.Tensor to a "
                                "torch.Tensor of the same shape, elementwise (e.g. torch.tanh).") from exc
            if not isinstance(out, Tensor) or out.shape != probe.shape:
                got = f"tensor of shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
                raise TypeError(f"{label} {self.name!r} must map a torch.Tensor to a torch.Tensor of the same "
                                f"shape, elementwise; on shape (5, 1) it returned a {got}.")
        if self.derivative is None:
            try:
                self.grad(probe)
            except Exception as exc:
                raise TypeError(f"activation {self.name!r} is not differentiable by autograd "
                                f"({type(exc).__name__}: {exc}); pass derivative=... explicitly.") from exc
        if self.nodes is not None and (isinstance(self.nodes, bool) or not isinstance(self.nodes, int)
                                       or not 2 <= self.nodes <= MAX_NODES):
            raise ValueError(f"nodes must be an integer from 2 to {MAX_NODES} (each kernel entry costs about "
                             f"4 nodes^2 evaluations; the adaptive order, nodes=None, uses at most 64 and reaches "
                             f"1e-12), or None to choose the order from the variances; got {self.nodes!r}.")
