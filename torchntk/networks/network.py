"""The finite network of any description, in the NTK parameterisation (docs/conventions.md).

>>> import torch
>>> from torchntk import mlp
>>> net = mlp(depth=4, activation="relu", bias_std=0.1).network(width=1024, out_features=1, seed=0)
>>> x = torch.randn(6, 3)
>>> net(x).shape                             # (N, 1)
torch.Size([6, 1])
>>> y, hidden = net(x, return_hidden=True)   # hidden["preactivations"], hidden["activations"]
>>> len(hidden["preactivations"]), hidden["activations"][0].shape
(3, torch.Size([6, 1024]))

For a fully-connected description, layer l = 1 .. L maps a(l-1) (N, n_{l-1}) to

    a~(l) = (weight_std / sqrt(n_{l-1})) a(l-1) W(l)^T + bias_std * b(l),   W, b iid N(0, 1)

with a(l) = sigma(a~(l)) between layers and f(x) = a~(L). This is the paper's parameterisation:
as the widths grow the outputs at initialisation tend to a GP of covariance Sigma(L)
(Proposition 1) and the NTK to Theta(L) (x) Id (Theorem 1), the kernels that the same description
computes. Convolutions, pooling, branches and LayerNorm are built from the same layer objects
whose kernels the description computes (torchntk.networks.weighted and .modules).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._inputs import check_dtype
from ..engine.base import BuildContext
from ..engine.graph import ADJACENCY, as_adjacency
from ..engine.mask import MASK, as_mask
from ..engine.signal import ArchitectureError, Signal, input_signal, shapes_only, side_shapes
from ..engine.tiles import device_memory
from .modules import Aggregate, Elementwise, real_only, side_inputs
from .weighted import NTKConv, NTKConvLocal, NTKDense


class NTKNetwork(nn.Module):
    """The finite network of a description (build with ``spec.network`` or `build_network`).

    The modules are built for the per-example input shape, (d,) for vectors or (C, *positions):
    given as ``input_shape``, or taken from the first batch. A description whose first layer is
    Dense is built at once, its first layer drawn at the first forward (the same weights
    either way, and an optimiser made before then holds them); any other is built at its first
    forward (make optimisers after it, or give ``input_shape``).

    Attributes:
        body: nn.Sequential of the layers' modules (None until built).
        spec: the description it was built from (its weighted layers carry their
            parameterisation, "ntk" or "standard", and each module shows it).
        seed: the seed its layers' generators derive from.
        input_shape: the per-example shape it was built for (None until known).
    """

    def __init__(self, spec: Any, hidden: Sequence[int], out_features: int, seed: int, *,
                 dtype: torch.dtype, device: torch.device | str | None,
                 input_shape: tuple[int, ...] | None) -> None:
        super().__init__()
        self.spec, self.seed = spec, seed
        self._hidden, self._out_features = list(hidden), out_features
        self._dtype, self._device = dtype, device
        self.body: nn.Module | None = None
        self.input_shape: tuple[int, ...] | None = None
        self._mask_checked: set[tuple[int, ...]] = set()   # input shapes whose layers keep the positions
        if input_shape is not None:
            self.build(tuple(input_shape))
        elif spec.starts_with_dense():
            self._build(input_signal((1,)), None)   # the size 1 is a stand-in: the first layer draws lazily

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Draw every layer's parameters for inputs of per-example shape ``input_shape`` (a
        no-op once they are drawn)."""
        input_shape = tuple(input_shape)
        if self.body is None:
            self._build(input_signal(input_shape), input_shape[0])
        elif self.input_shape is None:   # built before its input size was known: a dense first layer
            if len(input_shape) != 1:
                raise ValueError(f"this network takes vectors (N, n0) (its first layer is Dense); got inputs of "
                                 f"per-example shape {input_shape}.")
            self.weighted[0].materialize(input_shape[0])
        self.input_shape = input_shape

    def _build(self, sig: Signal, channels: int | None) -> None:
        with shapes_only():   # a finite network of any description runs, exact limit or not
            signals, out = self.spec.signals(sig)
            self.spec.check_whole(out, kernels=False)
        ctx = BuildContext(self._hidden, self._out_features, self.spec.depth - 1, self.seed, self._dtype,
                           self._device)
        self.body, _ = self.spec.build_modules(signals, channels, ctx)

    # -- views ------------------------------------------------------------------------

    @property
    def weighted(self) -> tuple[nn.Module, ...]:
        """The weighted modules (`NTKDense`, `NTKConv`, `NTKConvLocal`), depth-first, the order of their generators."""
        return () if self.body is None else tuple(m for m in self.body.modules()
                                                  if isinstance(m, (NTKDense, NTKConv, NTKConvLocal)))

    @property
    def dense(self) -> tuple[NTKDense, ...]:
        """The `NTKDense` layers, in order (all weighted layers of a fully-connected network)."""
        return tuple(m for m in self.weighted if isinstance(m, NTKDense))

    @property
    def activations(self) -> tuple:
        """The nonlinearities (Activation objects), in the order the forward applies them."""
        return () if self.body is None else tuple(m.activation for m in self.body.modules()
                                                  if isinstance(m, Elementwise))

    @property
    def widths(self) -> tuple[int | None, ...]:
        r"""The widths :math:`(n_0, n_1, \dots, n_L)`, the input's features or channels (None until known) and each
        weighted layer's outputs (units or channels)."""
        first = self.weighted[0] if self.weighted else None
        n0 = first.fan_in if isinstance(first, NTKDense) else (self.input_shape[0] if self.input_shape else None)
        return (n0, *self._hidden, self._out_features)

    @property
    def depth(self) -> int:
        """The number :math:`L` of weighted layers (depth 1 is a random affine map)."""
        return self.spec.depth

    @property
    def out_features(self) -> int:
        """The number of outputs :math:`n_L` (the last weighted layer's width)."""
        return self._out_features

    # -- forward ------------------------------------------------------------------------

    def forward(self, x: Tensor, return_hidden: bool = False, *, adjacency: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor | tuple[Tensor, dict[str, list[Tensor]]]:
        r""":math:`f(x)`: (N, out_features) after a readout, (N, out_features, *positions) otherwise.

        ``adjacency``: for a description with `Aggregate`, the graphs' adjacencies (N, V, V),
        ``A[n, i, j]`` the weight of the arc i -> j, for graphs x (N, C, V), or an integer edge
        list (N, E, 2) of (tail, head) pairs (negative ends: padding); required exactly then (a
        real or bool adjacency is used in the input's dtype).

        ``mask``: for variable-length inputs, a boolean (N, *positions) tensor, True where x holds
        data and False at padding (`torchntk.engine.mask`): x is ignored at padding, which every
        layer that mixes positions reads as zeros, attention gives no weight and GlobalAvgPool
        leaves out; an output with positions is zero there.

        With ``return_hidden=True`` also a dict with "preactivations", the output of every
        weighted layer but the last, and "activations", the output of every nonlinearity, in
        the order the forward computes them: :math:`[\tilde a^{(1)}, \dots, \tilde a^{(L-1)}]` and
        :math:`[a^{(1)}, \dots, a^{(L-1)}]`, each (N, n_l), for a fully-connected network.
        """
        self._check_input(x)
        if self.body is None or self.input_shape is None:
            self.build(tuple(x.shape[1:]))
        side = self._side_inputs(x, adjacency, mask)
        with side_inputs(side):
            if MASK not in side:
                return self._forward(x, return_hidden)
            out = self._forward(real_only(x), return_hidden)
            y = out[0] if return_hidden else out
            if y.dim() > 2:   # outputs with positions: zero at padding, as the kernels say
                y = real_only(y)
            return (y, out[1]) if return_hidden else y

    def check_side_inputs(self, x: Tensor, *, adjacency: Any = None, mask: Any = None) -> None:
        """Check the side inputs of a forward on x, their shapes and values, without running it
        (building the network for x if it is not yet built): the checks the forward makes, also
        for callers that run the forward under torch.func transforms, where only the shapes can
        be read (the empirical NTK's ``forward_kwargs``). ValueError / TypeError as the forward."""
        self._check_input(x)
        if self.body is None or self.input_shape is None:
            self.build(tuple(x.shape[1:]))
        self._side_inputs(x, adjacency, mask)

    def _side_inputs(self, x: Tensor, adjacency: Any, mask: Any) -> dict[str, Tensor]:
        side = {}
        if mask is not None:
            side[MASK] = as_mask(mask, "mask", x.shape[0], tuple(x.shape[2:]), device=x.device)
            shape = tuple(x.shape[1:])
            if shape not in self._mask_checked:   # once per shape: forwards come in chunks and draws
                with shapes_only(), side_shapes({MASK: shape[1:]}):
                    self.spec.signals(input_signal(shape))   # refuses layers that change the positions
                self._mask_checked.add(shape)
        readers = [m for m in self.body.modules() if isinstance(m, Aggregate)]
        if adjacency is None:
            if readers:
                raise ValueError("this network has Aggregate layers, which need the graphs' adjacency: call "
                                 "net(x, adjacency=A), A (N, V, V) with A[n, i, j] the weight of the arc i -> j.")
            return side
        if not readers:
            raise ValueError("adjacency= was given, but this network has no Aggregate layer to read it; leave it out.")
        if x.dim() != 3:
            raise ValueError(f"a network with Aggregate takes graphs (N, C, V); got inputs of shape {tuple(x.shape)}.")
        side[ADJACENCY] = as_adjacency(adjacency, "adjacency", x.shape[0], x.shape[2], dtype=x.dtype,
                                       device=x.device)
        return side

    def _forward(self, x: Tensor, return_hidden: bool) -> Tensor | tuple[Tensor, dict[str, list[Tensor]]]:
        if not return_hidden:
            return self.body(x)
        pre: list[Tensor] = []
        post: list[Tensor] = []
        hidden = self.weighted[:-1]
        hooks = [m.register_forward_hook(lambda _m, _a, out: pre.append(out)) for m in hidden]
        hooks += [m.register_forward_hook(lambda _m, _a, out: post.append(out))
                  for m in self.body.modules() if isinstance(m, Elementwise)]
        try:
            y = self.body(x)
        finally:
            for hook in hooks:
                hook.remove()
        return y, {"preactivations": pre, "activations": post}

    def _check_input(self, x: Any) -> None:
        vectors = self.input_shape is None and self.body is not None or (
            self.input_shape is not None and len(self.input_shape) == 1)
        layout = "(N, n0)" if vectors else "(N, d) or (N, C, *positions)"
        if not isinstance(x, Tensor):
            raise TypeError(f"the network takes a torch.Tensor of shape {layout}; got {type(x).__name__} "
                            "(convert with torch.as_tensor(x, dtype=...)).")
        if (vectors and x.dim() != 2) or x.dim() < 2:
            hint = "x.reshape(1, -1)" if vectors else "x.unsqueeze(0)"
            raise ValueError(f"the network takes inputs of shape {layout}; got shape {tuple(x.shape)} "
                             f"(for one input use {hint}).")
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            if vectors:
                raise ValueError(f"the network takes {self.input_shape[0]} input features, got {x.shape[1]}.")
            raise ValueError(f"the network was built for inputs of shape (N, {', '.join(map(str, self.input_shape))}); "
                             f"got {tuple(x.shape)}.")
        first = self.weighted[0] if self.weighted else None
        if first is None:
            return
        if x.dtype != first.weight.dtype:
            raise TypeError(f"input dtype {x.dtype} differs from the network's {first.weight.dtype}; "
                            f"use x.to({first.weight.dtype}) or build the network with dtype={x.dtype}.")
        if x.device != first.weight.device:
            raise ValueError(f"input is on {x.device} but the network is on {first.weight.device}; "
                             f"use x.to('{first.weight.device}').")

    def extra_repr(self) -> str:
        return f"widths={self.widths}, seed={self.seed}"


def build_network(spec: Any, width: int | Sequence[int] = 1024, out_features: int | None = None, seed: int = 0, *,
                  dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                  in_features: int | None = None, input_shape: Sequence[int] | None = None,
                  **unknown: Any) -> NTKNetwork:
    """The finite network of a description: ``spec.network(width=1024, out_features=1, seed=0)``.

    Each weighted layer is built in its own parameterisation (``Dense(parameterization=...)``,
    ``Conv(..., parameterization=...)``; see torchntk.networks.weighted), the one its kernels
    describe. Widths: a layer's own ``width=`` wins; ``width`` here fills the hidden layers
    without one; the last layer's ``width``, if given, is the number of outputs.

    Args:
        spec: the description (a `torchntk.Serial`; its scales and activations are used as they are).
        width: the hidden width, one int for the hidden weighted layers without a width of their
            own, or a list of depth - 1 ints (depth-first), one per hidden weighted layer, each
            equal to that layer's own width where it has one. Ignored (any int, or []) for depth 1.
        out_features: :math:`n_L`, the number of outputs (the last weighted layer's width): its
            ``width=`` if it has one (then out_features must equal it or be left out), else 1.
        seed: a non-negative integer; the same seed gives the same parameters on any device/dtype.
        dtype: torch.float32 (default) or torch.float64.
        device: where the parameters live (default: torch's default device).
        in_features: :math:`n_0` for vector inputs, the same as ``input_shape=(n0,)``.
        input_shape: the per-example input shape (d,) or (C, *positions): builds the network at
            once. If None it is taken from the first batch (the same weights either way).

    Returns:
        An `NTKNetwork`, mapping (N, *input_shape) to (N, out_features) after a readout.

    Raises:
        TypeError: ``parameterization=`` (the layers carry it: ``Dense(parameterization="standard",
            width=n)``) or any other unknown option.
        ValueError: a width in the list that differs from its layer's own, or ``out_features``
            that differs from the last layer's width.
    """
    if "parameterization" in unknown:
        raise TypeError("network() takes no parameterization=: each weighted layer carries its own, so that the "
                        "kernels and the finite network describe the same thing. Build the description with "
                        "Dense(parameterization='standard', width=n) / Conv(..., parameterization='standard', "
                        "width=n), or tn.mlp(depth, parameterization='standard', width=n).")
    if unknown:
        raise TypeError(f"network() got unexpected option(s) {sorted(unknown)}.")
    depth = _check_spec(spec)
    layers = spec.weighted_layers()
    hidden = _hidden_widths(width, depth, layers)
    out_features = _output_width(out_features, layers[-1], depth)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    check_dtype(dtype)
    _check_parameter_memory(spec, hidden, out_features, device)
    if in_features is not None:
        if input_shape is not None:
            raise ValueError("give in_features (vectors) or input_shape, not both.")
        input_shape = (in_features,)
    if input_shape is not None:
        if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence) or not input_shape:
            raise TypeError(f"input_shape must be a tuple of positive integers, (d,) or (C, *positions); "
                            f"got {input_shape!r}.")
        name = "in_features" if in_features is not None else "input_shape"
        input_shape = tuple(_positive_int(n, name) for n in input_shape)
        spec.analyse(input_shape, kernels=False)
    return NTKNetwork(spec, hidden, out_features, int(seed), dtype=dtype, device=device, input_shape=input_shape)


def _check_parameter_memory(spec: Any, hidden: list[int], out_features: int, device: Any) -> None:
    """Refuse, before drawing anything, widths whose parameters cannot fit: a lower bound on the
    bytes of the weights between hidden layers (drawn in float64, as weighted.py does)."""
    sizes = [*hidden, out_features]
    count = 0
    for i, layer in enumerate(spec.weighted_layers()[1:], start=1):
        window = getattr(layer, "filter_shape", 1)
        taps = math.prod(window) if isinstance(window, (tuple, list)) else int(window)   # at least
        count += sizes[i - 1] * sizes[i] * taps
    need, have = 8 * count, device_memory(torch.device(device) if device is not None else torch.device("cpu"))
    if need > have:
        raise ValueError(f"widths {hidden} need at least {count:.3g} parameters ({need / 2**30:.3g} GiB in float64, "
                         f"as they are drawn), more than the {have / 2**30:.3g} GiB available; use smaller widths.")


def _check_spec(spec: Any) -> int:
    """The depth of a description that can be a finite network; TypeError / ArchitectureError otherwise."""
    protocol = ("weighted_layers", "signals", "check_whole", "build_modules", "output_index", "starts_with_dense")
    if not all(hasattr(spec, name) for name in protocol):
        raise TypeError(f"spec must be a torchntk network description (e.g. tn.mlp(...) or tn.serial(...)), got "
                        f"{type(spec).__name__}.")
    depth = len(spec.weighted_layers())
    if depth == 0 or spec.output_index() != depth - 1:
        raise ArchitectureError("the network has no Dense or Conv layer outside a parallel branch after its last "
                                "branch merge; end it with Dense() (or a Conv) so that out_features can be set.")
    return depth


def _hidden_widths(width: Any, depth: int, layers: Sequence[Any]) -> list[int]:
    """The hidden weighted layers' widths: their own ``width`` where they have one, else ``width``'s."""
    own = [getattr(layer, "width", None) for layer in layers[:-1]]
    if isinstance(width, numbers.Integral) and not isinstance(width, bool):
        fill = _positive_int(width, "width")
        return [fill if w is None else w for w in own]
    if isinstance(width, (str, bytes)) or not isinstance(width, Sequence):
        raise TypeError(f"width must be an int or a list of {depth - 1} ints (one per hidden weighted layer), got "
                        f"{width!r}.")
    if len(width) != depth - 1:
        raise ValueError(f"width lists one size per hidden weighted layer: this depth-{depth} network has "
                         f"{depth - 1} hidden weighted layer(s), but got {len(width)} entries {list(width)}.")
    widths = [_positive_int(w, "width") for w in width]
    for i, (given, mine) in enumerate(zip(widths, own, strict=True)):
        if mine is not None and given != mine:
            raise ValueError(f"width[{i}] = {given}, but weighted layer {i} ({layers[i]!r}) has width={mine}; a "
                             "layer's own width is the one its kernels use. Make them agree, or give network() one "
                             "int that fills only the layers without a width.")
    return widths


def _output_width(out_features: Any, last: Any, depth: int) -> int:
    """The number of outputs: the last weighted layer's own ``width``, else ``out_features`` (1 by default)."""
    own = getattr(last, "width", None)
    if out_features is None:
        return 1 if own is None else own
    out_features = _positive_int(out_features, "out_features")
    if own is not None and out_features != own:
        raise ValueError(f"out_features={out_features}, but the last weighted layer (layer {depth - 1}, {last!r}) "
                         f"has width={own}, which is the number of outputs; leave out_features out or make them "
                         "agree.")
    return out_features


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}.")
    return int(value)
