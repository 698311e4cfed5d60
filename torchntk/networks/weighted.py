"""The weighted layers of finite networks, in the NTK parameterisation (docs/conventions.md).

    NTKDense:  a~ = (weight_std / sqrt(n_in)) a W^T + bias_std b,            W, b iid N(0, 1)
    NTKConv:   a~ = (weight_std / sqrt(C_in |F|)) W * pad(a) + bias_std b,   W, b iid N(0, 1)
    NTKConvLocal: as NTKConv with a filter W_p and a bias b_p for each output position p
    NTKConvTranspose: NTKConv (stride 1) on the input dilated by the stride and padded

``parameterization="standard"`` draws W ~ N(0, weight_std^2 / fan_in), b ~ N(0, bias_std^2) and
applies a plain affine map: the same function at initialisation from the same seed, but
gradients (and so the NTK and the training dynamics) scale differently.

Reproducibility: the weighted layer with index i (depth-first) draws (W, b) from its own
generator, seeded from (seed, i), on the CPU in float64, then casts and moves. The same seed
gives the same network on any device and in any dtype, and a dense first layer is the same
whether its input size is given up front or taken from the first batch it sees.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter, is_lazy

from ..engine.windows import out_size
from .modules import CONV, pad_input, real_only

PARAMETERIZATIONS = ("ntk", "standard")


def layer_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator for layer ``index`` of the network with ``seed``.

    The pair is mixed by numpy's SeedSequence, so nearby seeds and layers give unrelated streams.
    """
    words = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    state = (int(words[0]) << 31) ^ int(words[1])  # < 2^63: a valid manual_seed
    return torch.Generator(device="cpu").manual_seed(state)


class NTKDense(LazyModuleMixin, nn.Module):
    r"""One dense layer in the NTK parameterisation,
    :math:`\tilde a = \frac{\sigma_w}{\sqrt{n_\text{in}}}\, a W^\top + \beta\, b`
    (:math:`\sigma_w` = ``weight_std``, :math:`\beta` = ``bias_std``).

    Attributes:
        weight: Parameter of shape (n_out, n_in), iid :math:`\mathcal N(0, 1)` ("ntk"); left
            uninitialised until the first forward when ``in_features`` is None.
        bias: Parameter of shape (n_out,), iid :math:`\mathcal N(0, 1)` ("ntk").
        weight_std: :math:`\sigma_w` (a float).
        bias_std: :math:`\beta` (a float).
        fan_in: :math:`n_\text{in}` (None until known).
        parameterization: "ntk" or "standard"
            (:math:`W \sim \mathcal N(0, \sigma_w^2 / n_\text{in})`, :math:`b \sim \mathcal N(0, \beta^2)`,
            forward :math:`a W^\top + b`).
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
        r"""The input size :math:`n_\text{in}` (None until the weight is drawn)."""
        return None if is_lazy(self.weight) else self.weight.shape[1]

    @property
    def weight_scale(self) -> float:
        r"""The factor :math:`c` in :math:`\tilde a = c\, a W^\top + \dots`, which is
        :math:`\sigma_w / \sqrt{n_\text{in}}` ("ntk") or 1 ("standard")."""
        if self.parameterization == "standard":
            return 1.0
        return self.weight_std / math.sqrt(self.fan_in)

    @property
    def bias_scale(self) -> float:
        r"""The factor on :math:`b` in the forward, :math:`\beta` ("ntk") or 1 ("standard")."""
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


class NTKConv(nn.Module):
    r"""A convolution layer in the NTK parameterisation,
    :math:`\tilde a = \frac{\sigma_w}{\sqrt{C_\text{in} |F|}}\, W * a + \beta\, b`, with :math:`|F|`
    the number of positions in the filter.

    Attributes:
        weight: (C_out, C_in, *filter_shape), iid :math:`\mathcal N(0, 1)` under "ntk".
        bias: (C_out,), iid :math:`\mathcal N(0, 1)` under "ntk".
        weight_scale: :math:`\sigma_w / \sqrt{C_\text{in} |F|}` ("ntk") or 1 ("standard").
        bias_scale: :math:`\beta` ("ntk") or 1 ("standard").
        stride: tuple of ints.
        padding: "valid", "same" or "circular".
    """

    def __init__(self, in_channels: int, out_channels: int, filter_shape: tuple[int, ...], *,
                 stride: tuple[int, ...], padding: str, weight_std: float, bias_std: float,
                 parameterization: str, seed: int, index: int, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.filter_shape, self.stride, self.padding = tuple(filter_shape), tuple(stride), padding
        self.weight_std, self.bias_std, self.parameterization = float(weight_std), float(bias_std), parameterization
        self.index = index
        fan_in = in_channels * math.prod(filter_shape)
        generator = layer_generator(seed, index)
        weight = torch.randn(out_channels, in_channels, *filter_shape, generator=generator, dtype=torch.float64)
        bias = torch.randn(out_channels, generator=generator, dtype=torch.float64)
        if parameterization == "standard":
            weight, bias = weight * (self.weight_std / math.sqrt(fan_in)), bias * self.bias_std
            self.weight_scale, self.bias_scale = 1.0, 1.0
        else:
            self.weight_scale, self.bias_scale = self.weight_std / math.sqrt(fan_in), self.bias_std
        self.weight = nn.Parameter(weight.to(dtype=dtype, device=device))
        self.bias = nn.Parameter(bias.to(dtype=dtype, device=device))

    def forward(self, x: Tensor) -> Tensor:
        x = pad_input(real_only(x), self.filter_shape, self.stride, self.padding)
        return CONV[len(self.filter_shape)](x, self.weight * self.weight_scale, self.bias * self.bias_scale,
                                              stride=self.stride)

    def extra_repr(self) -> str:
        out_c, in_c = self.weight.shape[:2]
        return (f"{in_c}, {out_c}, filter_shape={self.filter_shape}, stride={self.stride}, padding={self.padding!r}, "
                f"weight_std={self.weight_std:g}, bias_std={self.bias_std:g}, "
                f"parameterization={self.parameterization!r}")


class NTKConvLocal(nn.Module):
    r"""A locally connected layer (a convolution with unshared weights) in the NTK
    parameterisation: for each output position :math:`p`,
    :math:`\tilde a(p) = \frac{\sigma_w}{\sqrt{C_\text{in} |F|}} \sum_{c, a} W_p(c, a)\, a_c(s p + a)
    + \beta\, b_p`.

    Attributes:
        weight: (C_out, *out_positions, C_in, *filter_shape), iid :math:`\mathcal N(0, 1)` under
            "ntk": one filter per output position.
        bias: (C_out, *out_positions), iid :math:`\mathcal N(0, 1)` under "ntk": one bias per
            output channel and position.
        weight_scale: :math:`\sigma_w / \sqrt{C_\text{in} |F|}` ("ntk") or 1 ("standard").
        bias_scale: :math:`\beta` ("ntk") or 1 ("standard").
        in_shape: the input's positions, which fix the output positions and so the weights.
    """

    plain_convolution = False   # the structured empirical NTK must not read it as a shared-weight Conv

    def __init__(self, in_channels: int, out_channels: int, filter_shape: tuple[int, ...],
                 in_shape: tuple[int, ...], *, stride: tuple[int, ...], padding: str, weight_std: float,
                 bias_std: float, parameterization: str, seed: int, index: int, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.filter_shape, self.stride, self.padding = tuple(filter_shape), tuple(stride), padding
        self.in_shape = tuple(in_shape)
        self.weight_std, self.bias_std, self.parameterization = float(weight_std), float(bias_std), parameterization
        self.index = index
        out_shape = tuple(out_size(n, k, s, padding) for n, k, s in zip(in_shape, filter_shape, stride, strict=True))
        fan_in = in_channels * math.prod(filter_shape)
        generator = layer_generator(seed, index)
        weight = torch.randn(out_channels, *out_shape, in_channels, *filter_shape, generator=generator,
                             dtype=torch.float64)
        bias = torch.randn(out_channels, *out_shape, generator=generator, dtype=torch.float64)
        if parameterization == "standard":
            weight, bias = weight * (self.weight_std / math.sqrt(fan_in)), bias * self.bias_std
            self.weight_scale, self.bias_scale = 1.0, 1.0
        else:
            self.weight_scale, self.bias_scale = self.weight_std / math.sqrt(fan_in), self.bias_std
        self.weight = nn.Parameter(weight.to(dtype=dtype, device=device))
        self.bias = nn.Parameter(bias.to(dtype=dtype, device=device))

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[2:]) != self.in_shape:
            raise ValueError(f"locally connected layer {self.index + 1} was built for inputs with positions "
                             f"{self.in_shape} (its weights are per output position), got {tuple(x.shape[2:])}.")
        x = pad_input(real_only(x), self.filter_shape, self.stride, self.padding)
        d = len(self.filter_shape)
        for axis, (k, s) in enumerate(zip(self.filter_shape, self.stride, strict=True)):
            x = x.unfold(2 + axis, k, s)            # (N, C, *out positions, *window) after every axis
        n, channels = x.shape[:2]
        out_shape = x.shape[2:2 + d]
        patches = x.reshape(n, channels, math.prod(out_shape), -1)
        weight = self.weight.reshape(self.weight.shape[0], math.prod(out_shape), channels, -1)
        out = torch.einsum("ncpk,opck->nop", patches, weight) * self.weight_scale
        return out.reshape(n, -1, *out_shape) + self.bias * self.bias_scale

    def extra_repr(self) -> str:
        out_c, in_c = self.weight.shape[0], self.weight.shape[1 + len(self.in_shape)]
        return (f"{in_c}, {out_c}, filter_shape={self.filter_shape}, in_shape={self.in_shape}, stride={self.stride}, "
                f"padding={self.padding!r}, weight_std={self.weight_std:g}, bias_std={self.bias_std:g}, "
                f"parameterization={self.parameterization!r}")


class NTKConvTranspose(NTKConv):
    r"""A transposed convolution in the NTK parameterisation, as ``jax.lax.conv_transpose``:
    the input dilated by the stride (``stride - 1`` zeros between positions), padded with
    ``pads`` zeros (before, after) per axis, then convolved with stride 1,
    :math:`\tilde a = \frac{\sigma_w}{\sqrt{C_\text{in} |F|}}\, W * \operatorname{pad}(\operatorname{dilate}(a))
    + \beta\, b`.
    Parameters as `NTKConv`'s, drawn the same way."""

    plain_convolution = False   # its input is dilated and padded first: not NTKConv's forward

    def __init__(self, in_channels: int, out_channels: int, filter_shape: tuple[int, ...], *,
                 stride: tuple[int, ...], pads: tuple[tuple[int, int], ...], weight_std: float, bias_std: float,
                 parameterization: str, seed: int, index: int, dtype: torch.dtype, device) -> None:
        super().__init__(in_channels, out_channels, filter_shape, stride=(1,) * len(filter_shape), padding="valid",
                         weight_std=weight_std, bias_std=bias_std, parameterization=parameterization, seed=seed,
                         index=index, dtype=dtype, device=device)
        self.dilation, self.pads = tuple(stride), tuple(pads)

    def forward(self, x: Tensor) -> Tensor:
        for axis, (s, (before, after)) in enumerate(zip(self.dilation, self.pads, strict=True)):
            dim = 2 + axis
            shape = list(x.shape)
            size = shape[dim]
            shape[dim] = (size - 1) * s + 1 + before + after
            out = x.new_zeros(shape)
            index = [slice(None)] * x.dim()
            index[dim] = slice(before, before + (size - 1) * s + 1, s)
            out[tuple(index)] = x
            x = out
        return CONV[len(self.filter_shape)](x, self.weight * self.weight_scale, self.bias * self.bias_scale)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", dilation={self.dilation}, pads={self.pads}"
