"""The layer protocol of the kernel engine, and the build context of finite networks.

Every layer of a description (a fully-connected stack is the case with no spatial axes)
answers four questions:

- ``signal(sig, where)``: its output's `Signal` for an input signal (and checks it);
- ``need(full_out)``: whether its input must be in the full layout, given whether its output
  must be (composite layers take and give a tuple per branch);
- ``kernel(state, full_out)``: the kernel map on a `KernelState` tile (``compile(full_out, sig)``:
  the same map with its layouts decided, once per call, for the input signal ``sig``);
- ``build(sig, channels, ctx)``: the finite `nn.Module` in the chosen parameterisation.

plus ``to_dict()`` (its plain-JSON node) and a ``repr`` that reads as the code that builds it.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from .._finite import check_scale
from ..networks.weighted import PARAMETERIZATIONS
from .signal import ArchitectureError, Signal, fail, law_checks
from .state import KernelState

FORMAT = "torchntk.spec"
"""The format tag of a description document, ``{"format": FORMAT, "version": VERSION, "network": node}``."""
VERSION = 1
"""The version of the description document that `Serial.to_dict` writes and `torchntk.from_dict` reads."""

MAX_NESTING = 24
"""Deepest nesting of serial / parallel in a description, checked when one is built and when one
is read from data: deep enough for any real block structure, and shallow enough that every file
holding a description (store manifests, model files, --spec files; see torchntk._json) reads
back, and that no recursion over it can exhaust the stack."""

Scale = float | Tensor
"""A weight_std or bias_std: a number, or a scalar tensor (with requires_grad to differentiate kernels in it)."""


class Layer:
    """Base class of the engine's layers (see the module docstring)."""

    weighted = False   # holds parameters (Dense, Conv)

    def signal(self, sig: Signal, where: str) -> Signal:
        """The output's `Signal` for input signal ``sig``, after checking that the layer accepts it.

        Args:
            sig: the input's signal (a tuple of signals, one per branch, between FanOut and FanIn).
            where: this layer's position in the description (e.g. "layer 3 (Conv(...))"), the
                prefix of every error message.

        Returns:
            The output's signal (a tuple per branch for layers that give branches).

        Raises:
            ArchitectureError: the input has the wrong rank, is too small for a window, is not
                Gaussian where the limit needs it, or cannot be merged; the message starts with ``where``.
        """
        raise NotImplementedError

    def need(self, full_out):
        """Whether this layer's input must be in the full layout (every pair of positions).

        Args:
            full_out: whether its output must be in the full layout (a tuple of bools, one per
                branch, for layers that give branches).

        Returns:
            The same for its input (a tuple per branch for layers that take branches). The
            default, for layers that act on each pair of positions alone, passes ``full_out`` on.
        """
        return full_out

    def kernel(self, state: KernelState, full_out) -> KernelState:
        """The layer's kernel map on one tile: the NNGP and NTK of its output from its input's.

        Args:
            state: the input's kernels on the tile, in the layout that `need` asked for (a tuple
                of states, one per branch, for layers that take branches). The layer owns its
                tensors and may overwrite them in place.
            full_out: whether the output must be in the full layout (else the diagonal one is
                enough); a tuple per branch for layers that give branches.

        Returns:
            The output's state on the same tile (pair prefix unchanged; positions as the
            layer's `signal` says).
        """
        raise NotImplementedError

    def compile(self, full_out, sig: Any = None) -> Callable[[Any], Any]:
        """The layer's kernel map with every layout decision taken: ``compile(full_out, sig)(state)``
        is ``kernel(state, full_out)``. A call of the kernels compiles its description once and
        applies the result to every tile, so composite layers (serial, parallel) work out what
        each of their layers needs (`need`) once per call, not once per tile.

        ``sig`` is the layer's input `Signal` (a tuple per branch), as `signal` checked it: the
        static facts of the input that a kernel map may depend on beyond the tile's tensors. The
        standard parameterisation's maps read the input's finite width from it (`Signal.width`);
        composite layers hand each of their layers its own input signal. None where no layer
        needs it."""
        return partial(self.kernel, full_out=full_out)

    def build(self, sig: Signal, channels, ctx: BuildContext) -> tuple[nn.Module, Any]:
        """The finite layer in the chosen parameterisation.

        Args:
            sig: the input's signal (as `signal` checked it).
            channels: the input's channel count (a tuple of counts between FanOut and FanIn;
                None for vectors whose size is taken from the first batch).
            ctx: the build context; weighted layers take their width and generator index from
                ``ctx.next_layer()``.

        Returns:
            (module, its output's channel count), the module mapping (N, C, *positions) or (N, d)
            inputs to outputs as the kernels describe.
        """
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The layer as plain JSON data, ``{"layer": name, **arguments}``, that `from_dict` reads back."""
        raise NotImplementedError

    def node(self) -> dict[str, Any]:
        """This layer as one node of a description document (its `to_dict`; a serial's node
        leaves out the document's version header, for nesting)."""
        return self.to_dict()

    def weighted_layers(self) -> list[Layer]:
        """The layers that hold parameters (Dense, Conv), depth-first in build order: the order
        in which a finite network numbers them and draws their generators."""
        return [self] if self.weighted else []

    def nesting(self) -> int:
        """How deeply serial and parallel nest inside this layer (0 for a plain layer)."""
        return 0

    def takes_branches(self) -> bool:
        """Whether the layer's input is the branches of a FanOut (a tuple of signals and states):
        parallel and the merges do; every other layer takes one signal."""
        return False

    def sublayers(self) -> tuple[Layer, ...]:
        """The layers this one is made of (a serial's steps, a parallel's branches); none for a plain layer."""
        return ()


@dataclass
class BuildContext:
    """What building a finite network needs. Weighted layers are numbered depth-first; each
    draws its parameters from its own generator (seed, index); the last one gets
    ``out_features`` outputs, hidden weighted layer i gets ``widths[i]`` (the layer's own
    ``width`` where it has one: `torchntk.networks.build_network` merges them). Each layer
    carries its own parameterisation."""

    widths: list[int]
    out_features: int
    output_index: int
    seed: int
    dtype: torch.dtype
    device: Any
    index: int = 0

    def next_layer(self) -> tuple[int, int]:
        """(output width, generator index) of the next weighted layer."""
        index = self.index
        self.index += 1
        return (self.out_features if index == self.output_index else self.widths[index]), index


def check_weighted_options(name: str, parameterization: Any, width: Any) -> None:
    """Raise unless ``parameterization`` is "ntk" or "standard" and ``width`` is None or a
    positive int (``name``, "Dense" or "Conv", starts the message)."""
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"{name}: parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}.")
    if width is None:
        return
    if isinstance(width, bool) or not isinstance(width, numbers.Integral):
        raise TypeError(f"{name}: width must be a positive integer (the layer's number of outputs), got {width!r}.")
    if width < 1:
        raise ValueError(f"{name}: width must be a positive integer (the layer's number of outputs), got {width}.")


def standard_fan_in(layer: Any, sig: Signal, where: str) -> int | None:
    """The input width that a weighted layer in the standard parameterisation scales its NTK by:
    ``sig.width`` (the data's channels or features, times the positions after Flatten, or the
    previous weighted layer's ``width``). None for the NTK parameterisation, whose kernels do not
    depend on widths. ArchitectureError naming the layer when it is unknown and the limit's laws
    are checked (a finite network takes its widths from ``spec.network(width=...)`` instead)."""
    if layer.parameterization != "standard":
        return None
    if sig.width is None and law_checks():
        raise fail(where, f"in the standard parameterisation the NTK of {type(layer).__name__} depends on its input "
                          "width, which is unknown here: the weighted layer before it has no width. Give that layer "
                          "width=n (e.g. Dense(width=512) or Conv((3, 3), width=64)), as neural-tangents' "
                          "stax.Dense(512) does; a SelfAttention has no width= (its heads take the network's "
                          "width), so a layer in the standard parameterisation cannot follow one.")
    return sig.width


def known_fan_in(layer: Layer, sig: Signal | None) -> int:
    """The input width a standard layer's compiled map needs, from its input signal."""
    fan_in = None if sig is None else standard_fan_in(layer, sig, repr(layer))
    if fan_in is None:
        raise ArchitectureError(f"{layer!r}: the standard parameterisation's kernel needs the input width; "
                                "compile it with its input signal (spec.kernels does).")
    return fan_in


def show_options(layer: Any) -> str:
    """The repr's tail for a weighted layer's parameterisation and width, where not the defaults."""
    return "".join(f", {k}={v!r}" for k, v in options_dict(layer).items())


def options_dict(layer: Any) -> dict[str, Any]:
    """A weighted layer's ``parameterization`` and ``width`` for its `to_dict`, each only where it is
    not the default ("ntk", None): a description of the NTK parameterisation without widths reads
    (and hashes, in kernel stores) as it always has."""
    out: dict[str, Any] = {}
    if layer.parameterization != "ntk":
        out["parameterization"] = layer.parameterization
    if layer.width is not None:
        out["width"] = layer.width
    return out


def check_nesting(parts: Sequence[Layer], what: str) -> int:
    """The nesting of a ``what`` ("serial" or "parallel") of ``parts``: one more than theirs;
    ValueError beyond `MAX_NESTING`."""
    nesting = 1 + max((part.nesting() for part in parts), default=0)
    if nesting > MAX_NESTING:
        raise ValueError(f"this {what}(...) nests serial / parallel {nesting} levels deep, more than the "
                         f"{MAX_NESTING} a description may hold; flatten it (serial(a, serial(b, c)) is "
                         "serial(a, b, c)).")
    return nesting


def check_int_tuple(value: Any, name: str, dims: int | None, where: str, minimum: int = 1) -> tuple[int, ...]:
    """A tuple of ints >= minimum (an int is broadcast to ``dims`` entries)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value),) * (dims or 1)
    if not isinstance(value, (tuple, list)) or not value or any(
            isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in value):
        raise fail(where, f"{name} must be an int or a tuple of ints, got {value!r}.")
    value = tuple(int(v) for v in value)
    if any(v < minimum for v in value):
        raise fail(where, f"{name} must be >= {minimum} in every axis, got {value}.")
    if dims is not None and len(value) != dims:
        raise fail(where, f"{name} has {len(value)} entries but the input has {dims} spatial axes.")
    return value


def check_scales(bias_std: Any, weight_std: Any) -> None:
    """Raise TypeError / ValueError unless both scales are finite, non-negative real scalars
    (numbers, or one-element floating tensors) with a finite square in float64."""
    for name, value in (("bias_std", bias_std), ("weight_std", weight_std)):
        if isinstance(value, Tensor):
            if value.numel() != 1 or not value.is_floating_point():
                raise TypeError(f"{name} must be a real scalar, got a tensor of shape {tuple(value.shape)} "
                                f"and dtype {value.dtype}.")
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}.")
        check_scale(name, value)  # finite, >= 0, finite square (torchntk/_finite.py)


def check_layer_scales(layer: Any, where: str) -> None:
    """`check_scales` of a weighted layer, as an `ArchitectureError` prefixed with ``where``."""
    try:
        check_scales(layer.bias_std, layer.weight_std)
    except (TypeError, ValueError) as exc:
        raise fail(where, str(exc)) from None


def square(scale: Scale) -> Scale:
    """scale^2: a float for numbers, a tensor (in the graph) for tensors."""
    return scale * scale if isinstance(scale, Tensor) else float(scale) ** 2


def number(scale: Scale) -> float:
    """A scale as a plain float (the value of a scalar tensor), for finite modules and JSON."""
    return float(scale.item()) if isinstance(scale, Tensor) else float(scale)


def show(scale: Scale) -> str:
    """A scale as a repr shows it: ``0.1``, or a tensor's value."""
    return f"{number(scale):g}"
