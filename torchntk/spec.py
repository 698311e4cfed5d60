"""A network description: one object that gives both the infinite-width kernels and, from the
same layers, finite networks in the same parameterisation.

>>> import torch
>>> from torchntk import Activation, Dense, ReLU, mlp, serial
>>> spec = mlp(depth=4, activation="relu", bias_std=0.1)
>>> spec = serial(Dense(bias_std=0.1), ReLU(), Dense(bias_std=0.1), Activation(torch.tanh), Dense())
>>> x1, x2 = torch.randn(5, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
>>> K, T = spec.kernels(x1, x2)        # Sigma(L), Theta(L): (N1, N2)
>>> K.shape, T.shape
(torch.Size([5, 2]), torch.Size([5, 2]))

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
from ._inputs import as_pair, as_pair_batches, to_output
from .activations import Activation, get_activation
from .arch import branches as _branches
from .arch.base import Layer
from .arch.pointwise import as_layer
from .arch.signal import ArchitectureError, Signal, input_signal
from .layers import Dense, apply_activation
from .tiling import DEFAULT_TILE, evaluate


class _ActivationStep:
    """Binds an Activation into the layer protocol (``apply`` on kernel states)."""

    def __init__(self, activation: Activation) -> None:
        self.activation = activation

    def apply(self, k):
        return apply_activation(self.activation, k)


class Serial(Layer):
    """A network description: layers in order (``serial`` nests, so a Serial is itself a layer).

    A fully-connected stack (Dense layers with activations between them) takes the fast dense
    path; any other architecture (Conv, pooling, branches, LayerNorm; torchntk.arch) the
    general one. ``depth`` counts weighted layers (Dense and Conv), as the paper counts dense
    layers: depth 1 is a random affine map, depth 4 has three hidden layers.
    """

    def __init__(self, layers: Sequence[Any], *, dense_stack: bool = False) -> None:
        self.layers = tuple(layers)
        self.is_dense_stack = dense_stack
        self._arch = tuple(as_layer(layer) for layer in self.layers)
        self._steps = tuple(_ActivationStep(l) if isinstance(l, Activation) else l for l in self.layers) \
            if dense_stack else ()

    @property
    def depth(self) -> int:
        """The number of weighted layers (Dense and Conv, branches included): L in the paper's count."""
        return len(self.weighted_layers())

    @property
    def dense_layers(self) -> tuple[Dense, ...]:
        """The `Dense` layers among this description's own entries, in order (not inside nested ones)."""
        return tuple(layer for layer in self.layers if isinstance(layer, Dense))

    @property
    def activations(self) -> tuple[Activation, ...]:
        """The nonlinearity after each hidden layer (depth - 1 of them, for a dense stack)."""
        return tuple(layer for layer in self.layers if isinstance(layer, Activation))

    def __repr__(self) -> str:
        return "serial(" + ", ".join(map(repr, self.layers)) + ")"

    # -- the layer protocol (torchntk.arch.base) --------------------------------------

    def weighted_layers(self) -> list[Layer]:
        return [w for layer in self._arch for w in layer.weighted_layers()]

    def signal(self, sig, where: str):
        return _branches.serial_signal(self._arch, sig, where)

    def need(self, full_out):
        return _branches.serial_need(self._arch, full_out)

    def kernel(self, state, full_out):
        return _branches.run_serial(self._arch, state, full_out)

    def layer_signals(self, sig) -> list:
        """The input signal of each layer (after checking them all)."""
        signals = []
        for i, layer in enumerate(self._arch):
            signals.append(sig)
            sig = layer.signal(sig, f"layer {i} ({layer!r})")
        return signals

    def build(self, sig, channels, ctx):
        return _branches.serial_build(self._arch, self.layer_signals(sig), channels, ctx)

    def build_modules(self, signals, channels, ctx):
        """As `build`, with each layer's input signal already known (``signals``, from `layer_signals`)."""
        return _branches.serial_build(self._arch, signals, channels, ctx)

    def output_index(self) -> int:
        """Depth-first index of the weighted layer that sets out_features: the last one, when it
        is not inside a parallel branch (-1 otherwise)."""
        count, last = 0, -1
        for layer in self._arch:
            if isinstance(layer, Serial):
                inner = layer.output_index()
                n = len(layer.weighted_layers())
                last = count + inner if inner >= 0 else (last if n == 0 else -1)
                count += n
            elif layer.weighted:
                last, count = count, count + 1
            else:
                n = len(layer.weighted_layers())
                if n:
                    last = -1
                count += n
        return last

    def to_dict(self) -> dict[str, Any]:
        """The description as a versioned plain-JSON document; `torchntk.from_dict` reads it back
        (the same kernels, and the same finite networks for a seed). No pickle: a user's own
        activation callable cannot be saved and raises ValueError."""
        from .arch.serialize import to_dict
        return to_dict(self)

    def node(self) -> dict[str, Any]:
        """This description as one node of a `to_dict` document, ``{"layer": "serial", "layers": [...]}``
        (without the document's version header, for nesting)."""
        from .arch.serialize import node_of
        return {"layer": "serial", "layers": [node_of(layer) for layer in self._arch]}

    def analyse(self, shape: tuple[int, ...], *, kernels: bool = True) -> Signal:
        """The output signal for inputs of per-example ``shape``; raises ArchitectureError naming
        the first layer that cannot take its input. ``kernels=False`` checks only what a finite
        network needs (shapes), not what the infinite-width kernels need."""
        from .arch.signal import shapes_only

        if kernels:
            sig = self.signal(input_signal(shape), "")
        else:
            with shapes_only():
                sig = self.signal(input_signal(shape), "")
        if isinstance(sig, tuple):
            raise ArchitectureError("the network ends with unmerged branches; add FanInSum() or FanInConcat().")
        for layer in _all_layers(self) if kernels else ():
            if getattr(layer, "analytic", True) is False:
                raise ArchitectureError(f"{layer!r}: {layer.why_not}")
        return sig

    # -- infinite-width kernels -------------------------------------------------------

    def kernels(self, x1: Any, x2: Any | None = None, *, diagonal: bool = False,
                out_features: int | None = None, dtype: torch.dtype = torch.float64,
                tile: int | None = None) -> tuple[Any, Any]:
        """(Sigma(L), Theta(L)): the NNGP and NTK of the infinite-width network, in one pass.

        Args:
            x1: inputs of shape (N1, n0); a torch tensor (any device) or a numpy array.
            x2: inputs of shape (N2, n0), or None for x1 against itself (then the result is
                exactly symmetric and only half the blocks are computed).
            diagonal: return only k(x1_i, x1_i), shape (N1,), in O(N1) work (x2 must be None).
            out_features: if given, return the (N1, N2, k, k) form K (x) Id_k.
            dtype: torch.float64 (default) or torch.float32.
            tile: block side of the tiled computation; bounds temporary memory (default: 512
                for fully-connected networks; for others chosen from the per-pair size).

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
        if self.is_dense_stack:
            t1, t2, numpy_out = as_pair(x1, x2, dtype)
        else:
            t1, t2, numpy_out = as_pair_batches(x1, x2, dtype)
        if diagonal and t2 is not None:
            raise ValueError("diagonal=True computes k(x_i, x_i) for x1 alone; leave x2 as None.")
        if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
            raise ValueError(f"tile must be a positive integer, got {tile!r}.")
        if out_features is not None and (not isinstance(out_features, int) or out_features < 1):
            raise ValueError(f"out_features must be a positive integer, got {out_features!r}.")
        scales = [s for layer in self.weighted_layers() for s in _scales(layer) if isinstance(s, Tensor)]
        inputs = [t for t in (t1, t2, *scales) if t is not None]
        # The in-place fast path runs only when no derivative of any kind is being taken.
        differentiable = any(_is_traced(t) for t in inputs) or (
            torch.is_grad_enabled() and any(t.requires_grad for t in inputs))
        with torch.set_grad_enabled(differentiable):
            if self.is_dense_stack:
                nngp, ntk = evaluate(self._steps, t1, t2, need_ntk=need_ntk, diagonal=diagonal,
                                     tile=DEFAULT_TILE if tile is None else tile)
            else:
                nngp, ntk = self._evaluate_arch(t1, t2, need_ntk, diagonal, tile)
        check_finite_kernels(nngp, ntk, self, inputs=(t1, t2))  # never a silent NaN (torchntk/_finite.py)
        results = []
        for k in (nngp, ntk):
            if k is not None and out_features is not None:
                k = expand_outputs(k, out_features)
            results.append(None if k is None else to_output(k, numpy_out))
        return tuple(results)

    def _evaluate_arch(self, t1, t2, need_ntk, diagonal, tile):
        from .arch.evaluate import evaluate as evaluate_arch
        out = self.analyse(tuple(t1.shape[1:]))
        full_in = bool(self.need(False))
        return evaluate_arch(self._arch, t1, t2, need_ntk=need_ntk, full_in=full_in, out_shape=out.shape,
                             diagonal=diagonal, tile=tile)

    # -- finite networks ----------------------------------------------------------------

    def network(self, width: int | Sequence[int] = 1024, out_features: int = 1, seed: int = 0, *,
                parameterization: str = "ntk", dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None, in_features: int | None = None,
                input_shape: Sequence[int] | None = None) -> torch.nn.Module:
        """A finite network of this description in the NTK parameterisation.

        Fully-connected stacks give a `torchntk.networks.NTKNetwork` (see `build_network`); other
        architectures a `torchntk.arch.network.ArchNetwork` whose hidden Conv layers have
        ``width`` channels and hidden Dense layers ``width`` units (or a list, one per hidden
        weighted layer, depth-first). ``input_shape`` (C, *positions) builds it at once;
        otherwise it is built from the first batch.
        """
        if self.is_dense_stack:
            from .networks import build_network
            if input_shape is not None:
                if in_features is not None or len(tuple(input_shape)) != 1:
                    raise ValueError(f"a fully-connected network takes input_shape=(n0,), got {input_shape!r}.")
                in_features = int(tuple(input_shape)[0])
            return build_network(self, width, out_features, seed, parameterization=parameterization, dtype=dtype,
                                 device=device, in_features=in_features)
        return self._arch_network(width, out_features, seed, parameterization, dtype, device,
                                  input_shape if input_shape is not None else
                                  ((in_features,) if in_features is not None else None))

    def _arch_network(self, width, out_features, seed, parameterization, dtype, device, input_shape):
        from ._inputs import check_dtype
        from .arch.network import ArchNetwork, check_output_layer
        from .networks import PARAMETERIZATIONS, _positive_int

        check_output_layer(self)
        hidden = self.depth - 1
        if isinstance(width, (list, tuple)):
            if len(width) != hidden:
                raise ValueError(f"width lists one size per hidden weighted layer: this network has {hidden}, "
                                 f"got {len(width)} entries {list(width)}.")
            widths = [_positive_int(w, "width") for w in width] or [1]
        else:
            widths = [_positive_int(width, "width")]
        out_features = _positive_int(out_features, "out_features")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}.")
        check_dtype(dtype)
        if input_shape is not None:
            input_shape = tuple(_positive_int(n, "input_shape") for n in input_shape)
            self.analyse(input_shape, kernels=False)
        return ArchNetwork(self, widths, out_features, seed, parameterization=parameterization, dtype=dtype,
                           device=device, input_shape=input_shape)


def _scales(layer) -> tuple:
    inner = getattr(layer, "dense", layer)
    return (getattr(inner, "bias_std", None), getattr(inner, "weight_std", None))


def _all_layers(layer) -> list:
    out = [layer]
    for child in getattr(layer, "_arch", ()) or getattr(layer, "branches", ()):
        out += _all_layers(child)
    return out


def _is_traced(t: Tensor) -> bool:
    """Whether forward-mode AD or a torch.func transform (jvp, vmap, ...) is watching t."""
    from torch._C._functorch import is_functorch_wrapped_tensor
    from torch.autograd.forward_ad import unpack_dual

    return is_functorch_wrapped_tensor(t) or unpack_dual(t).tangent is not None


def _options(options: dict) -> dict:
    allowed = {"diagonal": False, "out_features": None, "dtype": torch.float64, "tile": None}
    unknown = set(options) - set(allowed)
    if unknown:
        raise TypeError(f"unexpected option(s) {sorted(unknown)}; allowed: {sorted(allowed)}.")
    return {**allowed, **options}


def expand_outputs(kernel: Tensor, out_features: int) -> Tensor:
    """K (x) Id_k as an (..., k, k) tensor: the multi-output form of a scalar kernel."""
    eye = torch.eye(out_features, dtype=kernel.dtype, device=kernel.device)
    return kernel[..., None, None] * eye


def serial(*layers: Any) -> Serial:
    """A network description from its layers, in order.

    Fully-connected: ``serial(Dense(), ReLU(), Dense())``, Dense layers alternating with
    activations (names such as "relu", or callables on tensors such as ``torch.tanh``),
    starting and ending with Dense. Any other architecture mixes Conv, AvgPool, GlobalAvgPool,
    Flatten, LayerNorm, Dense, activations, and the branching layers FanOut, `parallel`,
    FanInSum, FanInConcat; ``serial`` nests. Architectures are checked against the input shape
    when kernels or networks are asked for (errors name the layer).
    """
    if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
        layers = tuple(layers[0])
    if not layers:
        raise ValueError("serial() needs at least one layer.")
    if any(isinstance(layer, Layer) for layer in layers):
        return Serial([layer if isinstance(layer, (Layer, Dense)) else _activation(layer, i)
                       for i, layer in enumerate(layers)])
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
            layer = _activation(layer, position)
        built.append(layer)
    if isinstance(built[-1], Activation):
        raise TypeError("the last layer must be Dense: the network's output is the pre-activation a~(L) "
                        "(add Dense() at the end).")
    return Serial(built, dense_stack=True)


def parallel(*branches: Any) -> Layer:
    """Branches side by side: branch i takes element i of a preceding FanOut(n) and the
    results go on to FanInSum() or FanInConcat(). Each branch is a layer or a serial(...)."""
    from .arch.branches import Parallel

    if len(branches) == 1 and isinstance(branches[0], (list, tuple)):
        branches = tuple(branches[0])
    if not branches:
        raise ValueError("parallel() needs at least one branch.")
    return Parallel([b if isinstance(b, (Layer, Dense)) else _activation(b, i) for i, b in enumerate(branches)])


def _activation(layer: Any, position: int) -> Activation:
    try:
        act = get_activation(layer)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"layer {position}: {exc}") from None
    act.check()
    return act


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
