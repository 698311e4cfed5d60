r"""Infinite-width kernels as GPyTorch kernels, with learnable bias_std and weight_std.

    import gpytorch
    from torchntk.gpytorch import NTKKernel, NNGPKernel
    covar = NTKKernel(depth=3, activation="relu", bias_std=0.1, weight_std=1.0)   # or spec=tn.mlp(...)
    covar = gpytorch.kernels.ScaleKernel(covar)                                   # composes as usual

`NNGPKernel` is :math:`\Sigma^{(L)}`, the covariance of an infinitely wide network's outputs at
initialisation (Proposition 1); a GP with it is the Bayesian posterior of that network when only
its readout is trained. `NTKKernel` is :math:`\Theta^{(L)}`, the limiting neural tangent kernel (Theorem 1);
as a GP covariance it is a kernel method with the NTK (for the trained network's predictions see
`torchntk.GradientFlow`). Both are computed by the network description's own recursion
(`torchntk.mlp(...).nngp` / ``.ntk``), differentiable in the two scales by autograd.

Hyperparameters follow GPyTorch's raw-parameter pattern: ``raw_bias_std`` and ``raw_weight_std``
are unconstrained `torch.nn.Parameter`s of shape (*batch_shape, 1) and ``bias_std`` =
constraint.transform(raw_bias_std) (`gpytorch.constraints.Positive` by default, a softplus), so
an optimiser of the marginal likelihood moves them freely while the scales stay positive. One
pair of scales is shared by every dense layer, as in `torchntk.mlp`.

Shapes (GPyTorch's): x1 (..., n, d), x2 (..., m, d); the kernel matrix is (*batch, n, m) with
batch the broadcast of the inputs' batch dimensions and ``batch_shape``; ``diag=True`` gives
(*batch, n). Batches are computed one after the other (the recursion is vectorised over data
points, not over hyperparameters); ``active_dims`` is applied by GPyTorch before the kernel sees
the inputs, so :math:`n_0` in :math:`\Sigma^{(1)} = \sigma_w^2\, x \cdot x' / n_0 + \beta^2` is the
number of active dimensions.

GPyTorch is an optional dependency (``pip install torchntk[gpytorch]``); only this module imports it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor

try:
    import gpytorch
    from gpytorch.constraints import Interval, Positive
    from gpytorch.priors import Prior
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("torchntk.gpytorch needs GPyTorch: pip install 'torchntk[gpytorch]' "
                      "(or pip install gpytorch).") from error

from .activations import CLOSED_FORM, QUADRATURE, Activation, get_activation
from .engine.dense import Dense
from .engine.serial import Serial, mlp, serial

__all__ = ["NNGPKernel", "NTKKernel"]

_SCALES = ("bias_std", "weight_std")


class _InfiniteWidthKernel(gpytorch.kernels.Kernel):
    """Shared machinery of `NNGPKernel` and `NTKKernel` (``_kind`` picks the matrix)."""

    _kind = "nngp"
    is_stationary = False  # the kernels depend on the inputs' norms and angle, not only on x - x'

    def __init__(self, depth: int | None = None, activation: str | Activation | Callable = "relu",
                 bias_std: float | None = None, weight_std: float | None = None, *, spec: Serial | None = None,
                 bias_std_prior: Prior | None = None, bias_std_constraint: Interval | None = None,
                 weight_std_prior: Prior | None = None, weight_std_constraint: Interval | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._layers, initial = _architecture(depth, activation, bias_std, weight_std, spec)
        for name, prior, constraint in (("bias_std", bias_std_prior, bias_std_constraint),
                                        ("weight_std", weight_std_prior, weight_std_constraint)):
            constraint = Positive() if constraint is None else constraint
            if not isinstance(constraint, Interval):
                raise TypeError(f"{name}_constraint must be a gpytorch.constraints.Interval (e.g. Positive()), "
                                f"got {type(constraint).__name__}.")
            self.register_parameter(f"raw_{name}", torch.nn.Parameter(torch.zeros(*self.batch_shape, 1)))
            self.register_constraint(f"raw_{name}", constraint)
            if prior is not None:
                if not isinstance(prior, Prior):
                    raise TypeError(f"{name}_prior must be a gpytorch.priors.Prior, got {type(prior).__name__}.")
                self.register_prior(f"{name}_prior", prior, _getter(name), _setter(name))
            if not constraint.check(torch.tensor(initial[name])):
                raise ValueError(f"{name} = {initial[name]} is outside its constraint {constraint}; the default "
                                 "Positive() needs a value > 0.")
            self._set_scale(name, initial[name])

    # -- the raw-parameter pattern --------------------------------------------------------

    @property
    def bias_std(self) -> Tensor:
        """beta, shape (*batch_shape, 1): the constraint's transform of ``raw_bias_std``."""
        return self.raw_bias_std_constraint.transform(self.raw_bias_std)

    @bias_std.setter
    def bias_std(self, value: float | Tensor) -> None:
        self._set_scale("bias_std", value)

    @property
    def weight_std(self) -> Tensor:
        """sigma_w, shape (*batch_shape, 1): the constraint's transform of ``raw_weight_std``."""
        return self.raw_weight_std_constraint.transform(self.raw_weight_std)

    @weight_std.setter
    def weight_std(self, value: float | Tensor) -> None:
        self._set_scale("weight_std", value)

    def _set_scale(self, name: str, value: float | Tensor) -> None:
        raw = getattr(self, f"raw_{name}")
        value = torch.as_tensor(value, dtype=raw.dtype, device=raw.device)
        self.initialize(**{f"raw_{name}": getattr(self, f"raw_{name}_constraint").inverse_transform(value)})

    # -- the kernel -----------------------------------------------------------------------

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False,
                **params: Any) -> Tensor:
        """k(x1, x2) of shape (*batch, n, m), or its diagonal (*batch, n) with ``diag=True``.

        Args:
            x1: (..., n, d) inputs.
            x2: (..., m, d) inputs (GPyTorch passes x1 itself for k(x1, x1)).
            diag: return only k(x1_i, x2_i) (n == m). For x2 equal to x1 this costs O(n) by the
                recursion's diagonal path; otherwise the full matrix is formed and its diagonal taken.
            last_dim_is_batch: GPyTorch's deprecated option: each input dimension is its own
                batch of one-dimensional inputs, (..., d, n, m).
        """
        for name, x in (("x1", x1), ("x2", x2)):
            # The kernel is computed in the inputs' dtype, the learnable scales cast to it: an
            # integer dtype would otherwise surface as a complaint about bias_std.
            if x.dtype not in (torch.float32, torch.float64):
                raise TypeError(f"{type(self).__name__} takes floating-point inputs (float32 or float64); {name} has "
                                f"dtype {x.dtype}: convert it first, e.g. x.double().")
        if last_dim_is_batch:
            x1 = x1.transpose(-1, -2).unsqueeze(-1)
            x2 = x2.transpose(-1, -2).unsqueeze(-1)
        if diag and x1.shape[-2] != x2.shape[-2]:
            raise RuntimeError(f"diag=True needs as many rows in x1 as in x2, got {x1.shape[-2]} and {x2.shape[-2]}.")
        same = x1 is x2 or (x1.shape == x2.shape and torch.equal(x1, x2))
        batch = torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2], self.batch_shape)
        count = batch.numel()
        n, m, d = x1.shape[-2], x2.shape[-2], x1.shape[-1]
        rows = x1.expand(*batch, n, d).reshape(count, n, d)
        cols = rows if same else x2.expand(*batch, m, d).reshape(count, m, d)
        scales = [getattr(self, name).to(dtype=x1.dtype).squeeze(-1).expand(batch).reshape(count)
                  for name in _SCALES]
        blocks = []
        for b in range(count):  # batch elements only: each block is vectorised over its data points
            spec = self._spec(scales[0][b], scales[1][b])
            method = spec.ntk if self._kind == "ntk" else spec.nngp
            if same:
                k = method(rows[b], diagonal=diag, dtype=x1.dtype)
            else:
                k = method(rows[b], cols[b], dtype=x1.dtype)
                k = k.diagonal() if diag else k
            blocks.append(k)
        out = torch.stack(blocks) if blocks else x1.new_zeros(count, n) if diag else x1.new_zeros(count, n, m)
        return out.reshape(*batch, n) if diag else out.reshape(*batch, n, m)

    def _spec(self, bias_std: Tensor, weight_std: Tensor) -> Serial:
        layers = [Dense(bias_std=bias_std, weight_std=weight_std) if layer is Dense else layer
                  for layer in self._layers]
        return serial(*layers)

    # -- pickling: built-in activations travel by name ------------------------------------

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_layers"] = [_portable(layer) for layer in self._layers]
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state["_layers"] = [get_activation(layer) if isinstance(layer, str) else layer for layer in state["_layers"]]
        super().__setstate__(state)

    def __repr__(self) -> str:
        acts = ", ".join(repr(layer) for layer in self._layers if layer is not Dense)
        return f"{type(self).__name__}(depth={self._layers.count(Dense)}, activations=[{acts}])"


class NNGPKernel(_InfiniteWidthKernel):
    r""":math:`\Sigma^{(L)}(x, x')`: the NNGP kernel of an infinitely wide fully-connected network,

    .. math::

        \Sigma^{(1)}(x, x') = \sigma_w^2\, \frac{x \cdot x'}{n_0} + \beta^2, \qquad
        \Sigma^{(l+1)}(x, x') = \sigma_w^2\, \mathbb E[s(u)\, s(v)] + \beta^2,

    over :math:`(u, v) \sim \mathcal N(0, \Sigma^{(l)})`, for ``depth`` dense layers (depth 1 is a
    random affine map) with activation :math:`s`.

    Args:
        depth: number of dense layers (default 3); not with ``spec``.
        activation: the nonlinearity: a name ("relu", "erf", "tanh", ...), a torchntk
            Activation or an elementwise callable on tensors; not with ``spec``.
        bias_std: the initial :math:`\beta` (default 0.1, or the spec's).
        weight_std: the initial :math:`\sigma_w` (default 1.0, or the spec's).
        spec: a network description (`torchntk.mlp` / `torchntk.serial`) instead of depth and
            activation; its dense layers must share one bias_std and one weight_std, which become
            the initial values (bias_std= / weight_std= override them).
        bias_std_prior, weight_std_prior: optional `gpytorch.priors.Prior` on each scale.
        bias_std_constraint, weight_std_constraint: default `gpytorch.constraints.Positive()`.
        **kwargs: GPyTorch's kernel options (``batch_shape``, ``active_dims``, ...).

    Example:
        >>> import torch
        >>> from torchntk.gpytorch import NNGPKernel
        >>> k = NNGPKernel(depth=2, bias_std=0.5)
        >>> k(torch.eye(2, dtype=torch.float64)).to_dense().detach().round(decimals=4)
        tensor([[0.6250, 0.4386],
                [0.4386, 0.6250]], dtype=torch.float64)
    """

    _kind = "nngp"


class NTKKernel(_InfiniteWidthKernel):
    r""":math:`\Theta^{(L)}(x, x')`: the limiting neural tangent kernel (Theorem 1) as a GPyTorch kernel,

    .. math::

        \Theta^{(1)} = \Sigma^{(1)}, \qquad
        \Theta^{(l+1)} = \Theta^{(l)}\, \dot\Sigma^{(l+1)} + \Sigma^{(l+1)}, \qquad
        \dot\Sigma^{(l+1)} = \sigma_w^2\, \mathbb E[s'(u)\, s'(v)].

    Arguments as for `NNGPKernel`.
    """

    _kind = "ntk"


def _architecture(depth, activation, bias_std, weight_std, spec) -> tuple[list, dict[str, float]]:
    """The layer list with the class `Dense` as a placeholder for each dense layer, and the
    initial scales."""
    if spec is None:
        built = mlp(3 if depth is None else depth, activation)
        initial = {"bias_std": 0.1, "weight_std": 1.0}
    else:
        if not isinstance(spec, Serial):
            raise TypeError(f"spec must be a fully-connected network description from torchntk.mlp or "
                            f"torchntk.serial, got {type(spec).__name__}.")
        if depth is not None or activation != "relu":
            raise ValueError("give either spec= or depth=/activation=, not both: the spec fixes the architecture.")
        built = serial(*_chain(spec))
        initial = {}
        for name in _SCALES:
            values = {float(getattr(layer, name)) for layer in built.weighted_layers()}
            if len(values) > 1:
                raise ValueError(f"the spec's dense layers have different {name} values {sorted(values)}; these "
                                 f"kernels learn one {name} shared by all layers: build the spec with one value.")
            initial[name] = values.pop()
    for name, value in (("bias_std", bias_std), ("weight_std", weight_std)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a positive number, got {value!r}.")
            initial[name] = float(value)
    layers = [Dense if isinstance(layer, Dense) else layer for layer in built.layers]
    return layers, initial


def _chain(spec: Serial) -> list:
    """The layers of a fully-connected description in order, nested serials flattened; a
    TypeError for anything else (these kernels take (N, d) vectors)."""
    out: list = []
    for layer in spec.layers:
        if isinstance(layer, Serial):
            out += _chain(layer)
        elif isinstance(layer, (Dense, Activation)):
            out.append(layer)
        else:
            raise TypeError(f"these kernels take fully-connected descriptions (Dense layers and activations, in any "
                            f"nesting) of (N, d) inputs; {layer!r} is not one. Use torchntk's own kernels "
                            f"(spec.kernels) for other architectures.")
    return out


def _portable(layer: Any) -> Any:
    """A layer as it is pickled: a built-in activation that does not pickle itself (closed forms
    may hold lambdas) by its name, which `get_activation` turns back into the same activation."""
    if not isinstance(layer, Activation):
        return layer
    try:
        pickle.dumps(layer)
        return layer
    except (pickle.PicklingError, AttributeError, TypeError):
        name = layer.name
        if name in {*CLOSED_FORM, *QUADRATURE} and type(get_activation(name)) is type(layer):
            return name
        raise


# Module-level functions bound by functools.partial (not lambdas), so kernels with priors pickle.
def _get_scale(module: _InfiniteWidthKernel, name: str) -> Tensor:
    return getattr(module, name)


def _put_scale(module: _InfiniteWidthKernel, value: Tensor, name: str) -> None:
    module._set_scale(name, value)


def _getter(name: str) -> Callable:
    return partial(_get_scale, name=name)


def _setter(name: str) -> Callable:
    return partial(_put_scale, name=name)
