"""A fitted model's settings (`ModelSettings`): the network description, the training time and
ridge, and their strict-JSON form in model.json.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from .._finite import check_depth
from ..activations import CLOSED_FORM, QUADRATURE
from ..engine.serial import Serial, mlp
from ..engine.serialize import from_dict


def _default_network() -> dict:
    return mlp(3, "relu", bias_std=0.1, weight_std=1.0).to_dict()


@dataclass(frozen=True)
class ModelSettings:
    """What describes a fitted model besides its data.

    Attributes:
        network: the network description as plain data, ``spec.to_dict()`` (the default is
            ``torchntk.mlp(3, "relu", bias_std=0.1)``); `ModelSettings.mlp` and `with_spec` build
            it. It is read back with `torchntk.from_dict`, which refuses unknown layers, unknown
            arguments and deep nesting.
        kernel: "ntk" (all layers trained) or "nngp" (only the readout trained).
        time: training time t in the paper's units (t = lr * steps; float("inf") = converged).
        ridge: added to the diagonal of the training kernel (see `torchntk.GradientFlow`); a
            tiny default, as scikit-learn's GaussianProcessRegressor alpha, so that duplicate
            training points leave t = inf defined. 0 gives the exact interpolant.
        input_shape: the per-example shape (C, *positions) that each row of the (N, d) inputs is
            reshaped to before the kernel (d = prod(input_shape)), e.g. (1, 8, 8) for 64-pixel
            images; None uses the rows as given.
    """

    network: dict = field(default_factory=_default_network, hash=False)
    kernel: str = "ntk"
    time: float = math.inf
    ridge: float = 1e-10
    input_shape: tuple[int, ...] | None = None

    @classmethod
    def mlp(cls, depth: int = 3, activation: str = "relu", *, bias_std: float = 0.1, weight_std: float = 1.0,
            **settings: Any) -> ModelSettings:
        """Settings for the fully-connected `torchntk.mlp` (activation by name, so that it can be
        saved), checked; ``settings`` are the other fields (kernel, time, ridge)."""
        try:
            depth = check_depth(depth)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        known = sorted([*CLOSED_FORM, *QUADRATURE])
        if not isinstance(activation, str) or activation.lower() not in known:
            raise ValueError(f"activation must be one of {', '.join(known)}; got {activation!r}.")
        scales = {}
        for name, value in (("bias_std", bias_std), ("weight_std", weight_std)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
            scales[name] = float(value)
        try:
            spec = mlp(depth, activation.lower(), **scales)
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        return cls(network=spec.to_dict(), **settings).check()

    @classmethod
    def with_spec(cls, spec: Any, input_shape: Sequence[int] | None = None, **settings: Any) -> ModelSettings:
        """Settings for a network description: a `Serial`, or its ``to_dict()`` data."""
        data = spec.to_dict() if isinstance(spec, Serial) else spec
        shape = None if input_shape is None else tuple(int(n) for n in input_shape)
        return cls(network=data, input_shape=shape, **settings).check()

    def check(self) -> ModelSettings:
        """Raise a ValueError / TypeError naming the bad setting; return self."""
        spec = self.spec()  # from_dict: a ValueError naming the bad layer
        if self.input_shape is not None:
            shape = self.input_shape
            if not isinstance(shape, tuple) or not shape or not all(
                    isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in shape):
                raise ValueError(f"input_shape must be a tuple of positive integers (C, *positions), got {shape!r}.")
            spec.analyse(tuple(int(n) for n in shape))  # ArchitectureError (a ValueError) naming the layer
        if self.kernel not in ("ntk", "nngp"):
            raise ValueError(f"kernel must be 'ntk' (all layers trained) or 'nngp' (readout only), "
                             f"got {self.kernel!r}.")
        for name, inf_ok in (("time", True), ("ridge", False)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
            if math.isnan(value) or value < 0 or (math.isinf(value) and not inf_ok):
                allowed = "a number >= 0 or inf" if inf_ok else "a finite number >= 0"
                raise ValueError(f"{name} must be {allowed}, got {value!r}.")
        return self

    def spec(self) -> Serial:
        """The network description (`torchntk.from_dict` of ``network``)."""
        if not isinstance(self.network, dict):
            raise TypeError(f"network must be a network description's to_dict() data (a dict), got "
                            f"{type(self.network).__name__}.")
        try:
            return from_dict(self.network)
        except ValueError as exc:
            raise ValueError(f"network: {exc}") from None

    def kernel_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, d) as the kernels take it: (N, *input_shape) when an input shape is set."""
        if self.input_shape is None:
            return x
        size = math.prod(self.input_shape)
        if x.shape[1] != size:
            raise ValueError(f"the inputs have {x.shape[1]} features but input_shape {self.input_shape} needs "
                             f"{size} (= the product of its entries).")
        return x.reshape(x.shape[0], *self.input_shape)

    def to_json(self) -> dict:
        """The settings as a strict-JSON object: the description's ``to_dict()`` data under
        "network", time inf as "inf", input_shape as a list or null."""
        return {"network": self.network, "kernel": self.kernel,
                "time": "inf" if math.isinf(self.time) else float(self.time),  # strict JSON has no Infinity
                "ridge": float(self.ridge),
                "input_shape": None if self.input_shape is None else list(self.input_shape)}

    @classmethod
    def from_json(cls, data: Any) -> ModelSettings:
        """The settings from `to_json`'s object, checked.

        Raises:
            ValueError: not an object, missing or unknown keys, a malformed input_shape or time,
                or values that `check` refuses.
        """
        if not isinstance(data, dict):
            raise ValueError("the model's settings are not a JSON object.")
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ValueError(f"the model's settings have keys {sorted(data)}; expected {sorted(names)}.")
        values = dict(data)
        shape = values["input_shape"]
        if shape is not None:
            if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
                raise ValueError(f"the model's input_shape must be a list of integers, got {shape!r}.")
            values["input_shape"] = tuple(shape)
        if values["time"] == "inf":
            values["time"] = math.inf
        elif isinstance(values["time"], str):
            raise ValueError(f"the model's time must be a number or \"inf\", got {values['time']!r}.")
        for name in ("ridge", "time"):
            if isinstance(values[name], int) and not isinstance(values[name], bool):
                values[name] = float(values[name])
        return cls(**values).check()


def migrate_settings(data: Any, version: int, reject: Callable[[str], Exception]) -> dict:
    """Settings JSON of an older model file in the current form (`ModelSettings.to_json`).

    Version 2 held the fully-connected network as depth / activation / bias_std / weight_std
    fields, or an ``architecture`` description with an optional ``input_shape``; both become the
    one ``network`` description. ``reject(reason)`` makes the error for anything else.
    """
    dense = ("depth", "activation", "bias_std", "weight_std")
    common = ("kernel", "time", "ridge")
    if version != 2 or not isinstance(data, dict) or not set(dense + common) <= set(data) <= set(
            dense + common + ("architecture", "input_shape")):
        raise reject("its settings are not those of a version-2 model file")
    if data.get("architecture") is not None:
        network = data["architecture"]
    else:
        try:
            network = ModelSettings.mlp(data["depth"], data["activation"], bias_std=data["bias_std"],
                                        weight_std=data["weight_std"]).network
        except (TypeError, ValueError) as exc:
            raise reject(f"its settings are invalid ({exc})") from None
    return {"network": network, **{name: data[name] for name in common}, "input_shape": data.get("input_shape")}
