r"""A network description: one object that gives both the infinite-width kernels and, from the
same layers, finite networks in the same parameterisation.

>>> import torch
>>> from torchntk import Activation, Dense, ReLU, mlp, serial
>>> spec = mlp(depth=4, activation="relu", bias_std=0.1)
>>> spec = serial(Dense(bias_std=0.1), ReLU(), Dense(bias_std=0.1), Activation(torch.tanh), Dense())
>>> x1, x2 = torch.randn(5, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
>>> K, T = spec.kernels(x1, x2)        # Sigma(L), Theta(L): (N1, N2)
>>> K.shape, T.shape
(torch.Size([5, 2]), torch.Size([5, 2]))

Multiple outputs (Theorem 1): the limit NTK of a network with :math:`n_L` outputs is
:math:`\Theta^{(L)} \otimes \mathrm{Id}_{n_L}` and the outputs are iid Gaussian processes of
covariance :math:`\Sigma^{(L)}` (Proposition 1), so the kernels are scalar; ``out_features=k``
returns the full (N1, N2, k, k) form :math:`K_{ij}\, \mathrm{Id}_k` for code that wants it.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .._finite import check_depth, check_finite_kernels
from .._inputs import as_pair_batches, is_traced, to_output
from ..activations import Activation, get_activation
from ..networks.network import build_network
from . import branches as _branches
from .base import FORMAT, VERSION, Layer, check_nesting
from .dense import Dense
from .graph import ADJACENCY, as_adjacency
from .mask import MASK, as_mask
from .pointwise import Nonlinearity, as_layer, naming_callables
from .signal import ArchitectureError, Signal, input_signal, shapes_only, side_shapes
from .tiles import check_memory, default_tile, evaluate, memory_estimate


class Serial(Layer):
    r"""A network description: layers in order (``serial`` nests, so a Serial is itself a layer).

    Any description, fully-connected or not, runs through the one kernel engine (a dense stack
    is the case with no spatial axes). ``depth`` counts weighted layers (Dense and Conv), as the
    paper counts dense layers: depth 1 is a random affine map, depth 4 has three hidden layers.

    Used as a whole network (``kernels``, ``network``) a description must end with the output of
    a weighted layer, :math:`f = \tilde a^{(L)}`, possibly pooled or flattened; nested in another
    (a branch, a block) it may start and end with any layer.

    Args:
        layers: the layers in order, as `torchntk.serial` takes them (which checks them; prefer it).
    """

    def __init__(self, layers: Sequence[Any]) -> None:
        self.layers = tuple(layers)
        self._arch = tuple(as_layer(layer) for layer in self.layers)
        self._nesting = check_nesting(self._arch, "serial")

    @property
    def depth(self) -> int:
        """The number of weighted layers (Dense and Conv, branches included), :math:`L` in the paper's count."""
        return len(self.weighted_layers())

    @property
    def activations(self) -> tuple[Activation, ...]:
        """The nonlinearities, depth-first (depth - 1 of them for a fully-connected stack)."""
        return tuple(layer.activation for layer in _all_layers(self) if isinstance(layer, Nonlinearity))

    def __repr__(self) -> str:
        return "serial(" + ", ".join(map(repr, self.layers)) + ")"

    # -- the layer protocol (torchntk.engine.base) ---------------------------------------

    def weighted_layers(self) -> list[Layer]:
        return [w for layer in self._arch for w in layer.weighted_layers()]

    def sublayers(self) -> tuple[Layer, ...]:
        return self._arch

    def takes_branches(self) -> bool:
        return self._arch[0].takes_branches()

    def nesting(self) -> int:
        return self._nesting

    def signal(self, sig, where: str):
        return _branches.serial_signal(self._arch, sig, where)

    def need(self, full_out):
        return _branches.serial_need(self._arch, full_out)

    def kernel(self, state, full_out):
        return self.compile(full_out)(state)

    def compile(self, full_out, sig=None):
        return _branches.compile_serial(self._arch, full_out, sig)

    def signals(self, sig) -> tuple[list, Any]:
        """(the input signal of each layer, the output signal), after checking them all."""
        return _branches.serial_signals(self._arch, sig, "")

    def build(self, sig, channels, ctx):
        return _branches.serial_build(self._arch, self.signals(sig)[0], channels, ctx)

    def build_modules(self, signals, channels, ctx):
        """As `build`, with each layer's input signal already known (``signals``, from `signals`)."""
        return _branches.serial_build(self._arch, signals, channels, ctx)

    def starts_with_dense(self) -> bool:
        """Whether the first layer to see the input (depth-first through nested serials) is
        Dense: then the description takes vectors (N, d)."""
        layer: Layer = self
        while isinstance(layer, Serial):
            layer = layer._arch[0]
        return isinstance(layer, Dense)

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

    def to_dict(self, *, name_callables: bool = False) -> dict[str, Any]:
        """The description as a versioned plain-JSON document, ``{"format": "torchntk.spec",
        "version": 1, "network": node}``, the one form that kernel stores and model files hold too;
        `torchntk.from_dict` reads it back (the same kernels, and the same finite networks for a
        seed).

        Args:
            name_callables: record a user's own activation callable by name (see
                `pointwise.naming_callables`; `torchntk.from_dict` cannot rebuild it). Without it
                such a callable cannot be saved (no pickle) and raises ValueError.

        Returns:
            The document, plain JSON data.
        """
        if name_callables:
            with naming_callables():
                return {"format": FORMAT, "version": VERSION, "network": self.node()}
        return {"format": FORMAT, "version": VERSION, "network": self.node()}

    def node(self) -> dict[str, Any]:
        """This description as one node of a `to_dict` document, ``{"layer": "serial", "layers": [...]}``
        (without the document's version header, for nesting)."""
        return {"layer": "serial", "layers": [layer.node() for layer in self._arch]}

    def analyse(self, shape: tuple[int, ...], *, kernels: bool = True) -> Signal:
        """The output signal of this description as a whole network, for inputs of per-example
        ``shape``; raises ArchitectureError naming the first layer that cannot take its input, or
        saying why the description cannot be a whole network.

        Args:
            shape: the per-example input shape, (d,) for vectors or (C, *positions).
            kernels: also check what the infinite-width kernels need (the default); False checks
                only what a finite network needs (shapes).

        Returns:
            The output `Signal`: its spatial shape and what the limit knows of it (Gaussian,
            centred, freshly weighted, flattened).
        """
        if kernels:
            return self.check_whole(self.signal(input_signal(shape), ""))
        with shapes_only():
            return self.check_whole(self.signal(input_signal(shape), ""), kernels=False)

    def check_whole(self, sig, *, kernels: bool = True) -> Signal:
        """``sig``, this description's output signal, if it can be a whole network's output (see
        `analyse`); ArchitectureError otherwise."""
        if isinstance(sig, tuple):
            raise ArchitectureError("the network ends with unmerged branches; add FanInSum() or FanInConcat().")
        if not sig.fresh:
            raise ArchitectureError(
                "a whole network ends with the output of a weighted layer, f = a~(L) (possibly pooled or "
                f"flattened), but this one ends with {self._arch[-1]!r}; add Dense() (or a Conv) at the end.")
        for layer in _all_layers(self) if kernels else ():
            if getattr(layer, "analytic", True) is False:
                raise ArchitectureError(f"{layer!r}: {layer.why_not}")
        return sig

    # -- infinite-width kernels -------------------------------------------------------

    def kernels(self, x1: Any, x2: Any | None = None, *, diagonal: bool = False,
                out_features: int | None = None, dtype: torch.dtype = torch.float64,
                tile: int | None = None, adjacency: Any = None, mask: Any = None) -> tuple[Any, Any]:
        r""":math:`(\Sigma^{(L)}, \Theta^{(L)})`: the NNGP and NTK of the infinite-width network, in one pass.

        Args:
            x1: inputs of shape (N1, n0) for vectors, (N1, C, L) for sequences or (N1, C, H, W)
                for images; a torch tensor (any device) or a numpy array.
            x2: inputs of the same per-example shape, or None for x1 against itself (then the
                result is exactly symmetric and only half the blocks are computed).
            diagonal: return only :math:`k(x_i, x_i)` for the rows of x1, shape (N1,), in
                :math:`O(N_1)` work (x2 must be None).
            out_features: if given, the number of outputs :math:`k`: return the (N1, N2, k, k)
                form :math:`K \otimes \mathrm{Id}_k` (see `expand_outputs`).
            dtype: torch.float64 (default) or torch.float32.
            tile: block side of the tiled computation; bounds temporary memory (default: 512,
                smaller when a pair of inputs carries a large spatial kernel).
            adjacency: for a description with `Aggregate` (graphs x (N, C, V)), the graphs'
                adjacencies, ``A[n, i, j]`` the weight of the arc i -> j: ``(A1, A2)``, of shapes
                (N1, V, V) and (N2, V, V), or one A1 when x2 is None; a tensor or numpy array,
                real or bool, or an integer edge list (N, E, 2) of (tail, head) pairs, negative
                ends marking padding (`torchntk.engine.graph.as_adjacency`). Required exactly
                when the description has an Aggregate.
            mask: for variable-length inputs, which positions hold data: boolean ``(m1, m2)`` of
                shapes (N1, *positions) and (N2, *positions), True at real positions and False at
                padding, or one m1 when x2 is None (`torchntk.engine.mask`): padding is held at
                zero, attention gives it no weight and GlobalAvgPool averages over the real
                positions, so a padded sequence with its mask has the kernels of the unpadded one.

        Returns:
            Two tensors (numpy arrays if the inputs were numpy) of shape (N1, N2), or (N1,) with
            ``diagonal=True``, or (N1, N2, k, k) with ``out_features=k``.
        """
        return self._compute(x1, x2, diagonal, out_features, dtype, tile, adjacency, mask, need_ntk=True)

    def nngp(self, x1: Any, x2: Any | None = None, **options: Any) -> Any:
        r""":math:`\Sigma^{(L)}(x_1, x_2)`: the covariance of each output at initialisation
        (Proposition 1). Computes only the NNGP, so it is cheaper than `kernels`.

        Args:
            x1: inputs (N1, ...), as for `kernels`.
            x2: inputs (N2, ...) of the same per-example shape, or None for x1 against itself.
            **options: ``diagonal``, ``out_features``, ``dtype``, ``tile``, ``adjacency`` and ``mask``, as for `kernels`
                (any other name is a TypeError).

        Returns:
            A tensor (numpy array if the inputs were numpy) of shape (N1, N2), or the shapes
            `kernels` gives with those options.
        """
        return self._compute(x1, x2, **_options(options), need_ntk=False)[0]

    def ntk(self, x1: Any, x2: Any | None = None, **options: Any) -> Any:
        r""":math:`\Theta^{(L)}(x_1, x_2)`: the limiting neural tangent kernel (Theorem 1).

        Args:
            x1: inputs (N1, ...), as for `kernels`.
            x2: inputs (N2, ...) of the same per-example shape, or None for x1 against itself.
            **options: ``diagonal``, ``out_features``, ``dtype``, ``tile``, ``adjacency`` and ``mask``, as for `kernels`
                (any other name is a TypeError).

        Returns:
            A tensor (numpy array if the inputs were numpy) of shape (N1, N2), or the shapes
            `kernels` gives with those options.
        """
        return self._compute(x1, x2, **_options(options), need_ntk=True)[1]

    def _compute(self, x1, x2, diagonal, out_features, dtype, tile, adjacency, mask, need_ntk):
        t1, t2, numpy_out = as_pair_batches(x1, x2, dtype)
        if diagonal and t2 is not None:
            raise ValueError("diagonal=True computes k(x_i, x_i) for x1 alone; leave x2 as None.")
        if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
            raise ValueError(f"tile must be a positive integer, got {tile!r}.")
        if out_features is not None and (not isinstance(out_features, int) or out_features < 1):
            raise ValueError(f"out_features must be a positive integer, got {out_features!r}.")
        sig = input_signal(tuple(t1.shape[1:]))
        side = self._side_inputs({ADJACENCY: adjacency, MASK: mask}, t1, t2)
        if MASK in side:   # the inputs at padding positions are never read
            t1, t2 = zero_padding(t1, side[MASK][0]), None if t2 is None else zero_padding(t2, side[MASK][1])
        # each side input was checked against the input's positions (the graphs' V), for every
        # layer that reads one to compare with its own input
        with side_shapes({name: tuple(t1.shape[2:]) for name in side}):
            out = self.analyse(tuple(t1.shape[1:]))
        full_in = bool(self.need(False))   # which covariance structure each layer needs: once per call
        self._check_memory(t1, t2, out.shape, full_in, diagonal, tile, need_ntk, out_features)
        # every scale a weighted layer holds as a tensor (Dense's two, SelfAttention's four)
        scales = [s for layer in self.weighted_layers() for s in vars(layer).values() if isinstance(s, Tensor)]
        inputs = [t for t in (t1, t2, *scales, *(a for pair in side.values() for a in pair)) if t is not None]
        # The in-place fast path runs only when no derivative of any kind is being taken.
        differentiable = any(is_traced(t) for t in inputs) or (
            torch.is_grad_enabled() and any(t.requires_grad for t in inputs))
        with torch.set_grad_enabled(differentiable):
            nngp, ntk = evaluate(self.compile(False, sig), t1, t2, need_ntk=need_ntk, full_in=full_in,
                                 out_shape=out.shape, diagonal=diagonal, tile=tile, side=side)
        check_finite_kernels(nngp, ntk, self, inputs=(t1, t2))  # never a silent NaN (torchntk/_finite.py)
        results = []
        for k in (nngp, ntk):
            if k is not None and out_features is not None:
                k = expand_outputs(k, out_features)
            results.append(None if k is None else to_output(k, numpy_out))
        return tuple(results)

    def _side_inputs(self, given: dict[str, Any], t1: Tensor, t2: Tensor | None) -> dict[str, tuple]:
        """The side inputs of a call (`torchntk.engine.state`), checked and converted: name ->
        (data of x1, data of x2 or None). An adjacency must be given exactly when a layer reads it
        (ValueError otherwise); a mask may be given to any description of inputs with positions."""
        readers: dict[str, Layer] = {}
        for layer in _all_layers(self):
            for name in getattr(layer, "side_inputs", ()):
                readers.setdefault(name, layer)
        side = {}
        for name, value in given.items():
            if value is None:
                if name in readers:
                    raise ValueError(f"{readers[name]!r} reads the graphs' {name}, but none was given: pass "
                                     f"{name}=(A1, A2) with x1 and x2, or {name}=A1 for x1 alone (A (N, V, V), "
                                     "A[n, i, j] the weight of the arc i -> j).")
                continue
            if name not in readers and name != MASK:
                raise ValueError(f"{name}= was given, but no layer of this description reads it (Aggregate() reads "
                                 "adjacency=); leave it out, or add the layer.")
            side[name] = _side_pair(name, value, t1, t2, readers.get(name))
        return side

    def _check_memory(self, t1: Tensor, t2: Tensor | None, out_shape: tuple[int, ...], full_in: bool,
                      diagonal: bool, tile: int | None, need_ntk: bool, out_features: int | None) -> None:
        """`tiles.check_memory` of this call, before any work."""
        positions, itemsize = tuple(t1.shape[2:]), t1.element_size()
        n2 = None if diagonal else (t1.shape[0] if t2 is None else t2.shape[0])
        branches = max([1] + [layer.n for layer in _all_layers(self) if isinstance(layer, _branches.FanOut)])
        estimate = memory_estimate(t1.shape[0], n2, positions, out_shape, full_in=full_in, itemsize=itemsize,
                                   tile=tile or default_tile(positions, full_in, itemsize),
                                   kernels=2 if need_ntk else 1, out_features=out_features, branches=branches)
        check_memory(estimate, t1.device)

    # -- finite networks ----------------------------------------------------------------

    def network(self, width: int | Sequence[int] = 1024, out_features: int | None = None, seed: int = 0, *,
                dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                in_features: int | None = None, input_shape: Sequence[int] | None = None,
                **unknown: Any) -> torch.nn.Module:
        """A finite network of this description, each weighted layer in its own parameterisation
        (``Dense(parameterization=...)``: the one its kernels describe), with weights drawn from
        ``seed`` (`torchntk.networks.build_network` does the work).

        Args:
            width: the hidden width: ``width`` channels for each hidden Conv, ``width`` units for
                each hidden Dense, where the layer has no ``width=`` of its own (a layer's own
                width wins); or a list of depth - 1 ints, one per hidden weighted layer,
                depth-first, each equal to the layer's own width where it has one. Ignored for
                depth 1 (a random affine map).
            out_features: :math:`n_L`, the number of outputs (the last weighted layer's width):
                that layer's ``width=`` when it has one (out_features must then agree or be left
                out), else 1 by default.
            seed: a non-negative integer; the same seed gives the same parameters on any device
                and dtype.
            dtype: torch.float32 (default) or torch.float64.
            device: where the parameters live (default: torch's default device).
            in_features: :math:`n_0` for vector inputs, the same as ``input_shape=(n0,)``.
            input_shape: the per-example input shape, (d,) or (C, *positions): builds the network
                at once. If None it is built at the first batch (with the same weights).
            **unknown: refused with a TypeError; ``parameterization=`` is not an option here
                (the layers carry it, see `Dense`).

        Returns:
            A `torchntk.networks.NTKNetwork` mapping (N, *input_shape) to (N, out_features).
        """
        return build_network(self, width, out_features, seed, dtype=dtype, device=device, in_features=in_features,
                             input_shape=input_shape, **unknown)


def _all_layers(layer: Layer) -> list[Layer]:
    out = [layer]
    for child in layer.sublayers():
        out += _all_layers(child)
    return out


def _side_pair(name: str, value: Any, t1: Tensor, t2: Tensor | None, reader: Layer | None) -> tuple[Tensor, Any]:
    """(x1's, x2's or None) side input ``name`` of a call, each checked against its inputs and
    converted (`graph.as_adjacency`, `mask.as_mask`): one value for x1 alone, a pair with x2."""
    each = "V, V" if name == ADJACENCY else ", ".join(map(str, t1.shape[2:]))   # one input's shape
    letter = name[0].upper()
    if name == ADJACENCY and t1.dim() != 3:
        raise ValueError(f"{reader!r} takes graphs (N, C, V) with adjacencies (N, V, V); the inputs have shape "
                         f"{tuple(t1.shape)}.")
    pair = isinstance(value, tuple)
    if t2 is None and pair:
        raise ValueError(f"x2 is None, so give one {name} for x1, {name}={letter}1 of shape ({t1.shape[0]}, {each}), "
                         f"not a tuple of {len(value)}.")
    if t2 is not None and (not pair or len(value) != 2):
        raise ValueError(f"with x1 and x2, give one {name} for each, a tuple {name}=({letter}1, {letter}2), of "
                         f"shapes ({t1.shape[0]}, {each}) and ({t2.shape[0]}, {each}).")

    def convert(v: Any, label: str, count: int) -> Tensor:
        if name == ADJACENCY:
            return as_adjacency(v, label, count, t1.shape[2], dtype=t1.dtype, device=t1.device)
        return as_mask(v, label, count, tuple(t1.shape[2:]), device=t1.device)
    if t2 is None:
        return convert(value, name, t1.shape[0]), None
    return (convert(value[0], f"{name}[0] (of x1)", t1.shape[0]),
            convert(value[1], f"{name}[1] (of x2)", t2.shape[0]))


def zero_padding(t: Tensor, m: Tensor | None) -> Tensor:
    """Inputs (n, C, *positions) with zeros at the padding positions of mask ``m`` (n, *positions):
    a new tensor, the caller's left as it is. ``t`` itself without a mask."""
    return t if m is None else t * m[:, None].to(t.dtype)


def _options(options: dict) -> dict:
    allowed = {"diagonal": False, "out_features": None, "dtype": torch.float64, "tile": None, "adjacency": None,
               "mask": None}
    unknown = set(options) - set(allowed)
    if unknown:
        raise TypeError(f"unexpected option(s) {sorted(unknown)}; allowed: {sorted(allowed)}.")
    return {**allowed, **options}


def expand_outputs(kernel: Tensor, out_features: int) -> Tensor:
    r""":math:`K \otimes \mathrm{Id}_k` as an (..., k, k) tensor: the multi-output form of a scalar kernel.

    Args:
        kernel: a scalar kernel of any shape (...), such as (N1, N2).
        out_features: :math:`k`, the number of outputs.

    Returns:
        ``kernel[..., None, None] * eye(k)``, of shape (..., k, k).
    """
    eye = torch.eye(out_features, dtype=kernel.dtype, device=kernel.device)
    return kernel[..., None, None] * eye


def serial(*layers: Any) -> Serial:
    """A network description from its layers, in order.

    What may follow what is checked against the input shape when kernels or networks are asked
    for (errors name the layer): a nonlinearity needs a Gaussian input (the output of a weighted
    layer), and a whole network ends with the output of a weighted layer.

    Args:
        *layers: the layers (or one list of them): Dense, Conv, AvgPool, GlobalAvgPool, Flatten,
            LayerNorm, activations (objects, names such as "relu", or callables on tensors such
            as ``torch.tanh``), the branching layers FanOut, `parallel`, FanInSum, FanInConcat,
            and other serials (``serial`` nests).

    Returns:
        A `Serial`.
    """
    if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
        layers = tuple(layers[0])
    if not layers:
        raise ValueError("serial() needs at least one layer.")
    built = []
    for position, layer in enumerate(layers):
        if isinstance(layer, Dense):
            layer.check()
        elif not isinstance(layer, Layer):
            layer = _activation(layer, position)
        built.append(layer)
    return Serial(built)


def parallel(*branches: Any) -> Layer:
    """Branches side by side: branch i takes element i of a preceding FanOut(n) and the
    results go on to FanInSum() or FanInConcat().

    Args:
        *branches: the branches (or one list of them), each a layer, an activation or a
            serial(...).
    """
    if len(branches) == 1 and isinstance(branches[0], (list, tuple)):
        branches = tuple(branches[0])
    if not branches:
        raise ValueError("parallel() needs at least one branch.")
    return _branches.Parallel([b if isinstance(b, Layer) else _activation(b, i) for i, b in enumerate(branches)])


def _activation(layer: Any, position: int) -> Activation:
    try:
        act = get_activation(layer)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"layer {position}: {exc}") from None
    act.check()
    return act


def mlp(depth: int, activation: str | Activation | Callable = "relu", *, bias_std: float | Tensor = 0.1,
        weight_std: float | Tensor = 1.0, parameterization: str = "ntk",
        width: int | Sequence[int] | None = None) -> Serial:
    r"""The paper's fully-connected network: ``depth`` Dense layers with ``activation`` between,

    .. math::

        \tilde a^{(1)} = \frac{\sigma_w}{\sqrt{n_0}}\, W^{(0)} x + \beta\, b^{(0)}, \qquad
        \tilde a^{(l+1)} = \frac{\sigma_w}{\sqrt{n_l}}\, W^{(l)} \sigma\big(\tilde a^{(l)}\big)
        + \beta\, b^{(l)},

    and :math:`f = \tilde a^{(L)}` (the conventions).

    Args:
        depth: :math:`L`, the number of Dense layers, 1 to `torchntk.MAX_DEPTH`: depth 1 is a
            random affine map, depth 4 has three hidden layers.
        activation: :math:`\sigma`, the nonlinearity between Dense layers: a name ("relu",
            "tanh", "erf", ...), an `Activation` object, or a callable on tensors (its kernels
            then come from quadrature). The same object is shared by all hidden layers.
        bias_std: :math:`\beta`, the scale of every bias (the paper's experiments use 0.1).
        weight_std: :math:`\sigma_w`, the scale of every weight matrix (the paper's is 1).
            Either scale may be a scalar tensor with requires_grad=True, to differentiate
            kernels in it.
        parameterization: of every Dense layer, "ntk" (the default) or "standard" (see `Dense`;
            its NTK depends on the hidden widths, so give ``width`` with it for depth > 1).
        width: the hidden layers' widths :math:`n_1, \dots, n_{L-1}`: one int for all, a list
            of depth - 1 ints, or None (then ``spec.network(width=...)`` sets them). The last
            layer gets none: its width is the network's ``out_features``.

    Returns:
        A `Serial` of depth ``depth``.
    """
    depth = check_depth(depth)  # an int in 1..MAX_DEPTH (torchntk/_finite.py)
    act = get_activation(activation) if depth > 1 else None
    widths = _mlp_widths(width, depth)
    layers: list = []
    for index in range(depth):
        if index:
            layers.append(act)
        layers.append(Dense(bias_std=bias_std, weight_std=weight_std, parameterization=parameterization,
                            width=widths[index] if index < depth - 1 else None))
    return serial(*layers)


def _mlp_widths(width: Any, depth: int) -> list:
    """mlp's hidden widths as a list of depth - 1 entries (None: not given)."""
    if width is None or (isinstance(width, numbers.Integral) and not isinstance(width, bool)):
        return [width] * (depth - 1)
    if isinstance(width, (str, bytes)) or not isinstance(width, Sequence):
        raise TypeError(f"mlp: width must be an int or a list of {depth - 1} ints (one per hidden layer), got "
                        f"{width!r}.")
    if len(width) != depth - 1:
        raise ValueError(f"mlp: width lists one size per hidden layer: depth {depth} has {depth - 1}, but got "
                         f"{len(width)} entries {list(width)}.")
    return list(width)
