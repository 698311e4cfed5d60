r"""Taylor expansions of a network in its parameters, as trainable modules.

::

    lin = linearize(model)               # g(x; theta) = f(x; theta0) + J_theta0(x) (theta - theta0)
    quad = taylor_expand(model, degree=2)   # ... + (1/2) D^2 f_theta0(x)[theta - theta0, theta - theta0]

The expansion of degree :math:`d` around :math:`\theta_0` (the model's parameters when it is
expanded) is

.. math::

    g_d(x; \theta) = \sum_{j=0}^{d} \frac{1}{j!}\, D^j_\theta f(x; \theta_0)[\delta, \dots, \delta],
    \qquad \delta = \theta - \theta_0.

Each term is a forward-mode derivative (``torch.func.jvp``) along :math:`\delta`, nested
:math:`j` times, so no Jacobian or Hessian is stored: one forward of :math:`g_1` costs about two
forward passes of the model and memory of the same order, and it back-propagates to
:math:`\theta` like any module. Training :math:`g_1` by gradient descent is kernel gradient
descent with the model's empirical NTK at :math:`\theta_0`, which stays fixed (Lee et al. 2019):
the NTK of ``linearize(model)`` is the NTK of ``model`` at :math:`\theta_0` at every
:math:`\theta`.

The expanded module keeps a frozen copy of the model (``.base``: theta0, the frozen parameters
and the buffers, in the model's train/eval mode at the time), and a trainable copy of its
trainable parameters (``.theta``, an nn.ParameterDict; ``named_theta()`` gives them under the
model's own names). The model itself is left untouched, so it can be trained beside its
expansion. ``expansion.parameters()`` can go to any torch optimiser: the frozen copy's
parameters have requires_grad=False and never receive gradients. BatchNorm in training mode
updates buffers in place, which forward-mode derivatives cannot follow: expand models in eval().
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings

from torch import Tensor, nn
from torch.func import functional_call, jvp

__all__ = ["TaylorExpansion", "linearize", "taylor_expand"]


MAX_DEGREE = 8
"""Highest expansion order: its forward already costs about 256 forwards of the model, and each
order past it doubles that."""


class TaylorExpansion(nn.Module):
    r""":math:`g_d(x; \theta)`, the degree-:math:`d` Taylor expansion of a module in its trainable
    parameters (see the module doc).

    Attributes:
        base: a frozen copy of the expanded model (its parameters are :math:`\theta_0`).
        theta: nn.ParameterDict of the trainable parameters, starting at :math:`\theta_0` (keys are
            the model's parameter names with "." replaced by "__").
        degree: :math:`d \ge 1`.
        names: the model's names of the trainable parameters, in order.
    """

    def __init__(self, model: nn.Module, degree: int) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        if isinstance(degree, bool) or not isinstance(degree, numbers.Integral) or not 1 <= degree <= MAX_DEGREE:
            raise ValueError(f"degree must be an integer from 1 (linearisation) to {MAX_DEGREE}: a forward of the "
                             f"degree-d expansion costs about 2^d forwards of the model ({2 ** MAX_DEGREE} at "
                             f"{MAX_DEGREE}); got {degree!r}.")
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters()):
            raise ValueError("the model has parameters that are not built yet (lazy layers): call it once on an "
                             "input (or build it with in_features=) before expanding it.")
        self.degree = int(degree)
        try:
            base = copy.deepcopy(model)
        except Exception as exc:
            raise TypeError(f"the model could not be copied (copy.deepcopy failed: {type(exc).__name__}: {exc}); "
                            "the expansion keeps a frozen copy of theta0 and the buffers.") from exc
        self.names = tuple(name for name, p in model.named_parameters() if p.requires_grad)
        if not self.names:
            raise ValueError("the model has no trainable parameters (requires_grad=True): there is nothing to "
                             "expand in.")
        for p in base.parameters():
            p.requires_grad_(False)
        self.base = base
        keys = [name.replace(".", "__") for name in self.names]
        if len(set(keys)) != len(keys):
            raise ValueError(f"parameter names collide once '.' is replaced by '__': {self.names}.")
        own = dict(base.named_parameters())
        self.theta = nn.ParameterDict({key: nn.Parameter(own[name].detach().clone())
                                       for key, name in zip(keys, self.names, strict=True)})
        self._keys = tuple(keys)
        self.training = model.training

    def theta0(self) -> dict[str, Tensor]:
        """The expansion point, {model parameter name: tensor} (frozen)."""
        own = dict(self.base.named_parameters())
        return {name: own[name] for name in self.names}

    def named_theta(self) -> dict[str, Tensor]:
        """The current trainable parameters under the model's own names."""
        return {name: self.theta[key] for name, key in zip(self.names, self._keys, strict=True)}

    def forward(self, *args, **kwargs):
        r""":math:`g_d(\text{inputs}; \theta)`: the model's call signature and output structure (any shapes)."""
        theta0 = self.theta0()
        delta = {name: self.theta[key] - theta0[name] for name, key in zip(self.names, self._keys, strict=True)}

        def f(params: dict[str, Tensor]):
            return functional_call(self.base, params, args, kwargs, strict=False)

        with warnings.catch_warnings():
            # torch's forward-mode AD loads its decompositions through torch.jit.script on first use
            warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=DeprecationWarning)
            try:
                terms = _derivatives(f, theta0, delta, self.degree)
            except RuntimeError as exc:
                if "in-place" not in str(exc):
                    raise
                raise RuntimeError("the model changes a tensor in place during its forward pass (e.g. BatchNorm "
                                   "updating its running statistics in training mode), which forward-mode "
                                   "derivatives cannot follow; put the model in eval() mode before expanding it, "
                                   f"or call .eval() on the expansion. ({exc})") from None
        return _sum_terms(terms)

    def extra_repr(self) -> str:
        return f"degree={self.degree}, parameters={sum(p.numel() for p in self.theta.values())}"


def _derivatives(f, theta0: dict[str, Tensor], delta: dict[str, Tensor], order: int) -> tuple:
    """(f(theta0), D f[delta], D^2 f[delta, delta], ..., D^order f[delta]^order) by nested jvps.

    With h(p) = (f(p), ..., D^(j-1) f(p)[delta]^(j-1)), the jvp of h along delta returns h itself
    and, as its last tangent, the next derivative D^j f[delta]^j.
    """
    if order == 0:
        return (f(theta0),)
    primal, tangent = jvp(lambda p: _derivatives(f, p, delta, order - 1), (theta0,), (delta,))
    return (*primal, tangent[-1])


def _sum_terms(terms: tuple):
    """sum_j terms[j] / j!, leaf by leaf for outputs that are tuples or dicts of tensors."""
    from torch.utils._pytree import tree_flatten, tree_unflatten

    leaves, spec = zip(*(tree_flatten(t) for t in terms), strict=True)
    total = [sum(term[i] / math.factorial(j) for j, term in enumerate(leaves)) for i in range(len(leaves[0]))]
    return tree_unflatten(total, spec[0])


def linearize(model: nn.Module) -> TaylorExpansion:
    r"""The first-order expansion
    :math:`g(x; \theta) = f(x; \theta_0) + J_{\theta_0}(x)\, (\theta - \theta_0)`.

    Args:
        model: any torch.nn.Module (buffers, frozen parameters and eval mode are kept as they are);
            any input signature and output shape.

    Returns:
        A `TaylorExpansion` of degree 1 whose trainable parameters start at the model's values, so
        that at first its outputs equal the model's. Its empirical NTK is the model's at
        :math:`\theta_0`, at every :math:`\theta`.
    """
    return TaylorExpansion(model, 1)


def taylor_expand(model: nn.Module, degree: int = 2) -> TaylorExpansion:
    r"""The degree-``degree`` expansion
    :math:`\sum_{j=0}^{d} \frac{1}{j!} D^j f(x; \theta_0)[\theta - \theta_0]^j`.

    Args:
        model: any torch.nn.Module.
        degree: the order :math:`d \ge 1` (1 is `linearize`); a forward costs about :math:`2^d`
            model forwards.

    Returns:
        A `TaylorExpansion`; its error against the model is
        :math:`O(\lVert \theta - \theta_0 \rVert^{d+1})`.
    """
    return TaylorExpansion(model, degree)
