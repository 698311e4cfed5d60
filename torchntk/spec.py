"""A network description: one object that gives both the infinite-width kernels and, from the
same layers, finite networks in the same parameterisation.

    spec = mlp(depth=4, activation="relu", bias_std=0.1)
    spec = serial(Dense(bias_std=0.1), ReLU(), Dense(bias_std=0.1), Activation(torch.tanh), Dense())
    K, T = spec.kernels(x1, x2)        # Sigma(L), Theta(L): (N1, N2)

Multiple outputs (Theorem 1): the limit NTK of a network with n_L outputs is Theta(L) (x) Id_{n_L}
and the outputs are iid GPs of covariance Sigma(L) (Proposition 1), so the kernels are scalar;
``out_features=k`` returns the full (N1, N2, k, k) form K[i, j] * Id_k for code that wants it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ._finite import check_depth, check_finite_kernels
from ._inputs import as_pair, to_output
from .activations import Activation, get_activation
from .layers import Dense, apply_activation
from .tiling import DEFAULT_TILE, evaluate


class _ActivationStep:
    """Binds an Activation into the layer protocol (``apply`` on kernel states)."""

    def __init__(self, activation: Activation) -> None:
        self.activation = activation

    def apply(self, k):
        return apply_activation(self.activation, k)


class Serial:
    """A fully-connected network description: Dense layers with activations between them.

    ``depth`` counts Dense layers, as in the paper: depth 1 is a random affine map, depth 4
    has three hidden layers.
    """

    def __init__(self, layers: Sequence[Dense | Activation]) -> None:
        self.layers = tuple(layers)
        self._steps = tuple(_ActivationStep(l) if isinstance(l, Activation) else l for l in self.layers)

    @property
    def depth(self) -> int:
        return sum(isinstance(layer, Dense) for layer in self.layers)

    @property
    def dense_layers(self) -> tuple[Dense, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, Dense))

    @property
    def activations(self) -> tuple[Activation, ...]:
        """The nonlinearity after each hidden layer (depth - 1 of them)."""
        return tuple(layer for layer in self.layers if isinstance(layer, Activation))

    def __repr__(self) -> str:
        return "serial(" + ", ".join(map(repr, self.layers)) + ")"

    # -- infinite-width kernels -------------------------------------------------------

    def kernels(self, x1: Any, x2: Any | None = None, *, diagonal: bool = False,
                out_features: int | None = None, dtype: torch.dtype = torch.float64,
                tile: int = DEFAULT_TILE) -> tuple[Any, Any]:
        """(Sigma(L), Theta(L)): the NNGP and NTK of the infinite-width network, in one pass.

        Args:
            x1: inputs of shape (N1, n0); a torch tensor (any device) or a numpy array.
            x2: inputs of shape (N2, n0), or None for x1 against itself (then the result is
                exactly symmetric and only half the blocks are computed).
            diagonal: return only k(x1_i, x1_i), shape (N1,), in O(N1) work (x2 must be None).
            out_features: if given, return the (N1, N2, k, k) form K (x) Id_k.
            dtype: torch.float64 (default) or torch.float32.
            tile: block side of the tiled computation; bounds temporary memory.

        Returns:
            Two tensors (numpy arrays if the inputs were numpy) of shape (N1, N2).
        """
        return self._compute(x1, x2, diagonal, out_features, dtype, tile, need_ntk=True)

    def nngp(self, x1: Any, x2: Any | None = None, **options: Any) -> Any:
        """Sigma(L)(x1, x2): the covariance of each output at initialisation (Proposition 1).
        Options as for `kernels`."""
        return self._compute(x1, x2, **_options(options), need_ntk=False)[0]

    def ntk(self, x1: Any, x2: Any | None = None, **options: Any) -> Any:
        """Theta(L)(x1, x2): the limiting neural tangent kernel (Theorem 1). Options as for
        `kernels`."""
        return self._compute(x1, x2, **_options(options), need_ntk=True)[1]

    def _compute(self, x1, x2, diagonal, out_features, dtype, tile, need_ntk):
        t1, t2, numpy_out = as_pair(x1, x2, dtype)
        if diagonal and t2 is not None:
            raise ValueError("diagonal=True computes k(x_i, x_i) for x1 alone; leave x2 as None.")
        if not isinstance(tile, int) or tile < 1:
            raise ValueError(f"tile must be a positive integer, got {tile!r}.")
        if out_features is not None and (not isinstance(out_features, int) or out_features < 1):
            raise ValueError(f"out_features must be a positive integer, got {out_features!r}.")
        scales = [s for d in self.dense_layers for s in (d.bias_std, d.weight_std) if isinstance(s, Tensor)]
        inputs = [t for t in (t1, t2, *scales) if t is not None]
        # The in-place fast path runs only when no derivative of any kind is being taken.
        differentiable = any(_is_traced(t) for t in inputs) or (
            torch.is_grad_enabled() and any(t.requires_grad for t in inputs))
        with torch.set_grad_enabled(differentiable):
            nngp, ntk = evaluate(self._steps, t1, t2, need_ntk=need_ntk, diagonal=diagonal, tile=tile)
        check_finite_kernels(nngp, ntk, self, inputs=(t1, t2))  # never a silent NaN (torchntk/_finite.py)
        results = []
        for k in (nngp, ntk):
            if k is not None and out_features is not None:
                k = expand_outputs(k, out_features)
            results.append(None if k is None else to_output(k, numpy_out))
        return tuple(results)

    # -- finite networks (torchntk.networks) ------------------------------------------

    def network(self, *args: Any, **kwargs: Any) -> torch.nn.Module:
        """A finite network of this description in the NTK parameterisation; see
        `torchntk.networks.build_network`."""
        from .networks import build_network
        return build_network(self, *args, **kwargs)


def _is_traced(t: Tensor) -> bool:
    """Whether forward-mode AD or a torch.func transform (jvp, vmap, ...) is watching t."""
    from torch._C._functorch import is_functorch_wrapped_tensor
    from torch.autograd.forward_ad import unpack_dual

    return is_functorch_wrapped_tensor(t) or unpack_dual(t).tangent is not None


def _options(options: dict) -> dict:
    allowed = {"diagonal": False, "out_features": None, "dtype": torch.float64, "tile": DEFAULT_TILE}
    unknown = set(options) - set(allowed)
    if unknown:
        raise TypeError(f"unexpected option(s) {sorted(unknown)}; allowed: {sorted(allowed)}.")
    return {**allowed, **options}


def expand_outputs(kernel: Tensor, out_features: int) -> Tensor:
    """K (x) Id_k as an (..., k, k) tensor: the multi-output form of a scalar kernel."""
    eye = torch.eye(out_features, dtype=kernel.dtype, device=kernel.device)
    return kernel[..., None, None] * eye


def serial(*layers: Dense | Activation | str | Callable) -> Serial:
    """A network description from its layers, e.g. ``serial(Dense(), ReLU(), Dense())``.

    Layers alternate Dense and activation, starting and ending with Dense. Activations may be
    given as names ("relu") or callables on tensors (``torch.tanh``).
    """
    if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
        layers = tuple(layers[0])
    if not layers:
        raise ValueError("serial() needs at least one Dense layer.")
    built = []
    for position, layer in enumerate(layers):
        want_dense = position % 2 == 0
        if want_dense:
            if not isinstance(layer, Dense):
                raise TypeError(f"layer {position} must be a Dense layer (layers alternate Dense and "
                                f"activation, starting with Dense); got {layer!r}.")
            layer.check()
        else:
            if isinstance(layer, Dense):
                raise TypeError(f"layer {position} is Dense but an activation must come between two Dense "
                                "layers (consecutive affine maps collapse into one).")
            layer = get_activation(layer)
            layer.check()
        built.append(layer)
    if isinstance(built[-1], Activation):
        raise TypeError("the last layer must be Dense: the network's output is the pre-activation a~(L) "
                        "(add Dense() at the end).")
    return Serial(built)


def mlp(depth: int, activation: str | Activation | Callable = "relu", bias_std: float | Tensor = 0.1,
        weight_std: float | Tensor = 1.0) -> Serial:
    """The paper's fully-connected network: ``depth`` Dense layers with ``activation`` between.

    depth 1 is a random affine map; depth 4 has three hidden layers. The same activation
    object is shared by all hidden layers.
    """
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise TypeError(f"depth must be an integer >= 1, got {depth!r}.")
    depth = check_depth(depth)  # 1..MAX_DEPTH (torchntk/_finite.py)
    act = get_activation(activation) if depth > 1 else None
    layers: list = []
    for index in range(depth):
        if index:
            layers.append(act)
        layers.append(Dense(bias_std=bias_std, weight_std=weight_std))
    return serial(*layers)
