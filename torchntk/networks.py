"""Finite networks of a `Serial` description, in the NTK parameterisation (docs/conventions.md).

>>> import torch
>>> from torchntk import mlp
>>> net = mlp(depth=4, activation="relu", bias_std=0.1).network(width=1024, out_features=1, seed=0)
>>> x = torch.randn(6, 3)
>>> net(x).shape                             # (N, 1)
torch.Size([6, 1])
>>> y, hidden = net(x, return_hidden=True)   # hidden["preactivations"], hidden["activations"]
>>> len(hidden["preactivations"]), hidden["activations"][0].shape
(3, torch.Size([6, 1024]))

Layer l = 1 .. L maps a(l-1) (N, n_{l-1}) to

    a~(l) = (weight_std / sqrt(n_{l-1})) a(l-1) W(l)^T + bias_std * b(l),   W, b iid N(0, 1)

with a(l) = sigma(a~(l)) between layers and f(x) = a~(L). This is the paper's parameterisation:
as the widths grow the outputs at initialisation tend to a GP of covariance Sigma(L)
(Proposition 1) and the NTK to Theta(L) (x) Id (Theorem 1), the kernels that the same `Serial`
computes. ``parameterization="standard"`` is offered for comparison: W ~ N(0, weight_std^2 / n),
b ~ N(0, bias_std^2) and a plain affine map. Both give the same function at initialisation from
the same seed, but gradients (and so the NTK and the training dynamics) scale differently.

Reproducibility: layer l draws (W, b) from its own generator, seeded from (seed, l), on the CPU
in float64, then casts and moves. The same seed gives the same network on any device and in any
dtype, and the first layer is the same whether its input size is given up front
(``in_features=``) or taken from the first batch it sees.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter, is_lazy

from ._inputs import check_dtype

if TYPE_CHECKING:
    from .spec import Serial

PARAMETERIZATIONS = ("ntk", "standard")


def layer_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator for layer ``index`` of the network with ``seed``.

    The pair is mixed by numpy's SeedSequence, so nearby seeds and layers give unrelated streams.
    """
    words = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    state = (int(words[0]) << 31) ^ int(words[1])  # < 2^63: a valid manual_seed
    return torch.Generator(device="cpu").manual_seed(state)


class NTKDense(LazyModuleMixin, nn.Module):
    """One dense layer, a~ = (weight_std / sqrt(n_in)) a W^T + bias_std * b (NTK parameterisation).

    Attributes:
        weight: Parameter of shape (n_out, n_in), iid N(0, 1) ("ntk"); left uninitialised until
            the first forward when ``in_features`` is None.
        bias: Parameter of shape (n_out,), iid N(0, 1) ("ntk").
        weight_std: sigma_w (a float).
        bias_std: beta (a float).
        fan_in: n_in (None until known).
        parameterization: "ntk" or "standard" (W ~ N(0, weight_std^2 / n_in), b ~ N(0, bias_std^2),
            forward a W^T + b).
    """

    def __init__(self, in_features: int | None, out_features: int, *, weight_std: float, bias_std: float,
                 parameterization: str, seed: int, index: int, dtype: torch.dtype,
                 device: torch.device | str | None) -> None:
        super().__init__()
        self.out_features = out_features
        self.weight_std = float(weight_std)
        self.bias_std = float(bias_std)
        self.parameterization = parameterization
        self.seed, self.index = seed, index
        self.weight = UninitializedParameter(device=device, dtype=dtype)
        self.bias = UninitializedParameter(device=device, dtype=dtype)
        if in_features is not None:
            self.materialize(in_features)
            # Built eagerly: drop the lazy-initialisation hooks as a first forward would.
            self._initialize_hook.remove()
            self._load_hook.remove()

    @property
    def fan_in(self) -> int | None:
        """n_in, the input size (None until the weight is drawn)."""
        return None if is_lazy(self.weight) else self.weight.shape[1]

    @property
    def weight_scale(self) -> float:
        """c in a~ = c a W^T + ...: weight_std / sqrt(n_in) ("ntk") or 1 ("standard")."""
        if self.parameterization == "standard":
            return 1.0
        return self.weight_std / math.sqrt(self.fan_in)

    @property
    def bias_scale(self) -> float:
        """The factor on b in the forward: bias_std ("ntk") or 1 ("standard")."""
        return 1.0 if self.parameterization == "standard" else self.bias_std

    def materialize(self, in_features: int) -> None:
        """Draw W and b for input size ``in_features`` (a no-op when already drawn)."""
        if not self.has_uninitialized_params():
            if in_features != self.fan_in:
                raise ValueError(f"dense layer {self.index + 1} takes {self.fan_in} input features, got {in_features}.")
            return
        generator = layer_generator(self.seed, self.index)
        weight = torch.randn(self.out_features, in_features, generator=generator, dtype=torch.float64)
        bias = torch.randn(self.out_features, generator=generator, dtype=torch.float64)
        if self.parameterization == "standard":
            weight = weight * (self.weight_std / math.sqrt(in_features))
            bias = bias * self.bias_std
        # In-place materialisation keeps the Parameter objects, so an optimiser made before the
        # first forward still holds them.
        for param, value in ((self.weight, weight), (self.bias, bias)):
            param.materialize(value.shape)
            with torch.no_grad():
                param.copy_(value)

    def initialize_parameters(self, a: Tensor) -> None:
        """The lazy hook: draw the weight for the first input's feature size."""
        self.materialize(a.shape[-1])

    def forward(self, a: Tensor) -> Tensor:
        return torch.addmm(self.bias, a, self.weight.t(), beta=self.bias_scale, alpha=self.weight_scale)

    def extra_repr(self) -> str:
        return (f"in_features={self.fan_in}, out_features={self.out_features}, weight_std={self.weight_std:g}, "
                f"bias_std={self.bias_std:g}, parameterization={self.parameterization!r}")


class NTKNetwork(nn.Module):
    """A finite fully-connected network of a `Serial` description (build with `build_network`).

    Attributes:
        dense: nn.ModuleList of the L `NTKDense` layers.
        activations: the description's Activation objects, one after each hidden layer (L - 1).
        widths: (n0, n1, ..., n_L); n0 is None until known (``in_features`` or the first forward).
        spec: the description it was built from.
        seed: the seed its layers' generators derive from.
        parameterization: "ntk" or "standard".
    """

    def __init__(self, spec: Serial, hidden: Sequence[int], out_features: int, seed: int, *,
                 parameterization: str, dtype: torch.dtype, device: torch.device | str | None,
                 in_features: int | None) -> None:
        super().__init__()
        self.spec, self.seed, self.parameterization = spec, seed, parameterization
        self.activations = tuple(spec.activations)
        sizes = [in_features, *hidden, out_features]
        self.dense = nn.ModuleList(
            NTKDense(sizes[i], sizes[i + 1], weight_std=_scalar(layer.weight_std), bias_std=_scalar(layer.bias_std),
                     parameterization=parameterization, seed=seed, index=i, dtype=dtype, device=device)
            for i, layer in enumerate(spec.dense_layers))

    @property
    def widths(self) -> tuple[int | None, ...]:
        """(n_0, n_1, .., n_L): the input size (None until the first layer is built) and each layer's outputs."""
        return (self.dense[0].fan_in, *(layer.out_features for layer in self.dense))

    @property
    def depth(self) -> int:
        """L, the number of dense layers (L = 1: a random affine map)."""
        return len(self.dense)

    @property
    def out_features(self) -> int:
        """n_L, the number of outputs."""
        return self.dense[-1].out_features

    def forward(self, x: Tensor, return_hidden: bool = False) -> Tensor | tuple[Tensor, dict[str, list[Tensor]]]:
        """f(x) of shape (N, out_features) for x of shape (N, n0).

        With ``return_hidden=True`` also a dict with "preactivations" [a~(1), ..., a~(L-1)] and
        "activations" [a(1), ..., a(L-1)], each of shape (N, n_l).
        """
        self._check_input(x)
        pre, post = [], []
        a = x
        for layer, act in zip(self.dense[:-1], self.activations, strict=True):
            z = layer(a)
            a = act(z)
            if return_hidden:
                pre.append(z)
                post.append(a)
        y = self.dense[-1](a)
        if return_hidden:
            return y, {"preactivations": pre, "activations": post}
        return y

    def _check_input(self, x: Any) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"the network takes a torch.Tensor of shape (N, n0); got {type(x).__name__} "
                            "(convert with torch.as_tensor(x, dtype=...)).")
        if x.dim() != 2:
            raise ValueError(f"the network takes inputs of shape (N, n0); got shape {tuple(x.shape)} "
                             "(for one input use x.reshape(1, -1)).")
        first = self.dense[0].weight
        n0 = self.dense[0].fan_in
        if n0 is not None and x.shape[1] != n0:
            raise ValueError(f"the network takes {n0} input features, got {x.shape[1]}.")
        if x.dtype != first.dtype:
            raise TypeError(f"input dtype {x.dtype} differs from the network's {first.dtype}; "
                            f"use x.to({first.dtype}) or build the network with dtype={x.dtype}.")
        if x.device != first.device:
            raise ValueError(f"input is on {x.device} but the network is on {first.device}; "
                             f"use x.to('{first.device}').")

    def extra_repr(self) -> str:
        return f"widths={self.widths}, seed={self.seed}, activations={[a.name for a in self.activations]}"


def build_network(spec: Serial, width: int | Sequence[int] = 1024, out_features: int = 1, seed: int = 0, *,
                  parameterization: str = "ntk", dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None, in_features: int | None = None) -> NTKNetwork:
    """A finite network of ``spec``: ``spec.network(width=1024, out_features=1, seed=0)``.

    Args:
        spec: the `Serial` description (its Dense scales and activations are used as they are).
        width: the hidden width, one int for all hidden layers or a list of depth - 1 ints.
            Ignored (any int, or []) for depth 1, a random affine map.
        out_features: n_L, the number of outputs.
        seed: a non-negative int; the same seed gives the same parameters on any device/dtype.
        parameterization: "ntk" (the paper's, the default) or "standard" (see the module doc).
        dtype: torch.float32 (default) or torch.float64.
        device: where the parameters live (default: torch's default device).
        in_features: n0. If None the first layer is drawn at the first forward from the input's
            feature size (the same weights either way).

    Returns:
        An `NTKNetwork`, mapping (N, n0) to (N, out_features).
    """
    from .spec import Serial

    if not isinstance(spec, Serial):
        raise TypeError(f"spec must be a torchntk Serial description (e.g. tn.mlp(...)), got {type(spec).__name__}.")
    hidden = _hidden_widths(width, spec.depth)
    out_features = _positive_int(out_features, "out_features")
    if in_features is not None:
        in_features = _positive_int(in_features, "in_features")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}.")
    check_dtype(dtype)
    for layer in spec.dense_layers:
        layer.check()
    return NTKNetwork(spec, hidden, out_features, int(seed), parameterization=parameterization, dtype=dtype,
                      device=device, in_features=in_features)


def _hidden_widths(width: Any, depth: int) -> list[int]:
    if isinstance(width, numbers.Integral) and not isinstance(width, bool):
        return [_positive_int(width, "width")] * (depth - 1)
    if isinstance(width, (str, bytes)) or not isinstance(width, Sequence):
        raise TypeError(f"width must be an int or a list of {depth - 1} ints (one per hidden layer), got {width!r}.")
    if len(width) != depth - 1:
        raise ValueError(f"width lists one size per hidden layer: this depth-{depth} network has {depth - 1} "
                         f"hidden layer(s), but got {len(width)} entries {list(width)}.")
    return [_positive_int(w, "width") for w in width]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}.")
    return int(value)


def _scalar(scale: float | Tensor) -> float:
    return float(scale.item()) if isinstance(scale, Tensor) else float(scale)
