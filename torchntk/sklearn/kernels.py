"""Infinite-width kernels as scikit-learn Gaussian-process kernels, with hyperparameter gradients.

    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import WhiteKernel
    from torchntk.sklearn import NNGPKernel
    gpr = GaussianProcessRegressor(NNGPKernel(depth=3) + WhiteKernel(0.1)).fit(X, y)
    gpr.kernel_          # bias_std and weight_std fitted by marginal likelihood

`NNGPKernel` is Sigma(L), the covariance of the network's outputs at initialisation
(Proposition 1): a GP with it is the exact Bayesian posterior of the infinitely wide network
whose readout layer alone is trained. `NTKKernel` is Theta(L) (Theorem 1): using it as a GP
covariance is a kernel method with the NTK, not the posterior of a trained network (for that,
see `torchntk.sklearn.NTKRegressor` or `torchntk.GradientFlow`).

Both have two hyperparameters, ``bias_std`` (beta) and ``weight_std`` (sigma_w), which
scikit-learn optimises on a log scale: the gradient returned with ``eval_gradient=True`` is
d K / d log(theta) = theta * d K / d theta, exact by torch autograd through the recursion.

Any architecture is given as ``spec`` (a network description or its ``to_dict()`` data) with
``input_shape`` to reshape each row of X into (C, *positions); its scales are then the
description's own, so both hyperparameters are reported as fixed (nothing for the optimiser).
Rows packed by `torchntk.sklearn.pack_rows` carry each example's side inputs (adjacency, mask)
after its input, unpacked by that description.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel

from .. import _side
from ..engine.serial import mlp

_HYPERPARAMETERS = ("bias_std", "weight_std")


class _InfiniteWidthKernel(Kernel):
    """Shared machinery of `NNGPKernel` and `NTKKernel` (``_kind`` picks the matrix)."""

    _kind = "nngp"

    def __init__(self, depth: int = 3, activation: str = "relu", bias_std: float = 0.1, weight_std: float = 1.0,
                 bias_std_bounds: tuple[float, float] | str = (1e-3, 1e1),
                 weight_std_bounds: tuple[float, float] | str = (1e-2, 1e1), spec=None,
                 input_shape=None) -> None:
        self.spec = spec
        self.input_shape = input_shape
        self.depth = depth
        self.activation = activation
        self.bias_std = bias_std
        self.weight_std = weight_std
        self.bias_std_bounds = bias_std_bounds
        self.weight_std_bounds = weight_std_bounds

    @property
    def hyperparameter_bias_std(self) -> Hyperparameter:
        return Hyperparameter("bias_std", "numeric", self._bounds(self.bias_std_bounds))

    @property
    def hyperparameter_weight_std(self) -> Hyperparameter:
        return Hyperparameter("weight_std", "numeric", self._bounds(self.weight_std_bounds))

    def _bounds(self, bounds):
        # With a spec the description carries its own scales: nothing here to fit.
        return "fixed" if self.spec is not None else bounds

    def is_stationary(self) -> bool:
        """False: the kernels depend on the inputs' norms and angle, not only on x - x'."""
        return False

    def __call__(self, X: np.ndarray, Y: np.ndarray | None = None, eval_gradient: bool = False):
        """The kernel k(X, Y) of shape (n_X, n_Y), and with ``eval_gradient`` its gradient.

        Args:
            X: inputs of shape (n_X, n_features).
            Y: inputs of shape (n_Y, n_features), or None for k(X, X).
            eval_gradient: also return d K / d log(theta), of shape (n_X, n_X, n_free), one
                slice per hyperparameter whose bounds are not "fixed" (bias_std, then
                weight_std). Only for Y = None, as in scikit-learn.
        """
        x1, side1 = self._inputs(X)
        x2, side2 = (None, None) if Y is None else self._inputs(Y)
        side = _side.keywords(side1, side2, x1, x2)
        if not eval_gradient:
            return self._matrix(self._spec(self.bias_std, self.weight_std), x1, x2, side=side).numpy()
        if Y is not None:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        free = [name for name in _HYPERPARAMETERS if not getattr(self, f"hyperparameter_{name}").fixed]
        for name in free:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} = {getattr(self, name)} cannot be fitted on a log scale; start from a "
                                 f"positive value, or set {name}_bounds='fixed' to keep it.")
        scales = {name: torch.tensor(float(getattr(self, name)), dtype=torch.float64, requires_grad=name in free)
                  for name in _HYPERPARAMETERS}
        k = self._matrix(self._spec(scales["bias_std"], scales["weight_std"]), x1, None, side=side)
        gradient = _entrywise_jacobian(k, [scales[name] for name in free])
        log_gradient = gradient * torch.stack([scales[name].detach() for name in free]) if free else gradient
        return k.detach().numpy(), log_gradient.numpy()

    def diag(self, X: np.ndarray) -> np.ndarray:
        """k(x_i, x_i) for each row of X, shape (n_X,), in O(n_X) work."""
        spec = self._spec(self.bias_std, self.weight_std)
        x, side = self._inputs(X)
        return self._matrix(spec, x, None, diagonal=True, side=side).numpy()

    def _spec(self, bias_std, weight_std):
        if self.spec is not None:
            return self._settings().spec()
        return mlp(self.depth, self.activation, bias_std=bias_std, weight_std=weight_std)

    def _settings(self):
        from .estimators import spec_settings
        return spec_settings(self.spec, self.input_shape)

    def _inputs(self, X) -> tuple[torch.Tensor, dict]:
        """X's inputs as the kernels take them, and the side inputs its rows carry (`pack_rows`)."""
        x = _as_tensor(X)
        if self.spec is None:
            return x, {}
        from .packing import unpack_rows

        settings = self._settings()
        flat, side = unpack_rows(x.numpy(), settings.spec(), settings.input_shape)
        return settings.kernel_inputs(torch.from_numpy(np.ascontiguousarray(flat))), side

    def _matrix(self, spec, x1, x2, diagonal: bool = False, side: dict | None = None) -> torch.Tensor:
        method = spec.ntk if self._kind == "ntk" else spec.nngp
        return method(x1, x2, diagonal=diagonal, **(side or {}))

    def __repr__(self) -> str:
        if self.spec is not None:
            return f"{type(self).__name__}(spec={self._spec(None, None)!r}, input_shape={self.input_shape!r})"
        return (f"{type(self).__name__}(depth={self.depth}, activation={self.activation!r}, "
                f"bias_std={self.bias_std:.3g}, weight_std={self.weight_std:.3g})")


class NNGPKernel(_InfiniteWidthKernel):
    r""":math:`\Sigma^{(L)}(x, x')`: the NNGP kernel of an infinitely wide fully-connected network,

    .. math::

        \Sigma^{(1)}(x, x') = \sigma_w^2\, \frac{x \cdot x'}{n_0} + \beta^2, \qquad
        \Sigma^{(l+1)}(x, x') = \sigma_w^2\, \mathbb E[s(u)\, s(v)] + \beta^2,

    over :math:`(u, v) \sim \mathcal N(0, \Sigma^{(l)})`, for ``depth`` dense layers (depth 1 is a
    random affine map) and activation :math:`s` (a name as in `torchntk.mlp`).

    Args:
        depth: number of dense layers.
        activation: name of the nonlinearity ("relu", "erf", "tanh", ...).
        bias_std: :math:`\beta`, a hyperparameter (positive to be fitted).
        weight_std: :math:`\sigma_w`, a hyperparameter (positive to be fitted).
        bias_std_bounds: (low, high) for the optimiser, or "fixed".
        weight_std_bounds: (low, high) for the optimiser, or "fixed".

    Example:
        >>> import numpy as np
        >>> from torchntk.sklearn import NNGPKernel
        >>> NNGPKernel(depth=2, bias_std=0.5)(np.eye(2)).round(4)
        array([[0.625 , 0.4386],
               [0.4386, 0.625 ]])
    """

    _kind = "nngp"


class NTKKernel(_InfiniteWidthKernel):
    r""":math:`\Theta^{(L)}(x, x')`: the limiting neural tangent kernel (Theorem 1) as a GP kernel,

    .. math::

        \Theta^{(1)} = \Sigma^{(1)}, \qquad
        \Theta^{(l+1)} = \Theta^{(l)}\, \dot\Sigma^{(l+1)} + \Sigma^{(l+1)}, \qquad
        \dot\Sigma^{(l+1)} = \sigma_w^2\, \mathbb E[s'(u)\, s'(v)].

    Parameters as for `NNGPKernel`.
    """

    _kind = "ntk"


def _as_tensor(x) -> torch.Tensor:
    # A copy: scikit-learn may hand read-only arrays (memmaps), which torch will not wrap.
    arr = np.array(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    return torch.from_numpy(arr)


def _entrywise_jacobian(k: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """d k[i, j] / d p for every entry of k and scalar p, shape k.shape + (len(params),).

    Reverse mode gives sum_ij u_ij d k_ij / d p for one weighting u per pass; that sum is
    linear in u, so differentiating it once more in u returns the whole matrix d k / d p
    (the "double-vjp" route to a forward-mode derivative). One extra backward pass per
    parameter, instead of one per matrix entry; forward-mode AD itself is not available
    through the recursion's custom autograd functions.
    """
    if not params:
        return torch.zeros(*k.shape, 0, dtype=k.dtype)
    u = torch.zeros_like(k, requires_grad=True)
    vjp = torch.autograd.grad(k, params, grad_outputs=u, create_graph=True, allow_unused=True)
    columns = []
    for g in vjp:
        if g is None or not g.requires_grad:  # k does not depend on this parameter (e.g. depth 1, weight)
            columns.append(torch.zeros_like(k))
            continue
        (d,) = torch.autograd.grad(g, u, retain_graph=True, allow_unused=True)
        columns.append(torch.zeros_like(k) if d is None else d)
    return torch.stack(columns, dim=-1).detach()
