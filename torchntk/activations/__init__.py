"""Activation layers: closed forms where they exist, quadrature for the rest."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .arccosine import RectifiedMonomial as RectifiedMonomial
from .arccosine import Sign as Sign
from .base import DEFAULT_NODES as DEFAULT_NODES
from .base import Activation as Activation
from .exponential import Exp as Exp
from .exponential import Gaussian as Gaussian
from .piecewise import Abs as Abs
from .piecewise import Identity as Identity
from .piecewise import LeakyReLU as LeakyReLU
from .piecewise import PiecewiseLinear as PiecewiseLinear
from .piecewise import ReLU as ReLU
from .polynomial import Hermite as Hermite
from .polynomial import Monomial as Monomial
from .polynomial import Polynomial as Polynomial
from .smooth import Cos as Cos
from .smooth import Erf as Erf
from .smooth import Gelu as Gelu
from .smooth import Rbf as Rbf
from .smooth import Sin as Sin

CLOSED_FORM: dict[str, Callable[[], Activation]] = {
    "relu": ReLU, "leaky_relu": LeakyReLU, "abs": Abs, "identity": Identity,
    "erf": Erf, "sin": Sin, "cos": Cos, "gelu": Gelu,
    "sign": Sign, "step": lambda: RectifiedMonomial(0), "exp": Exp, "gaussian": Gaussian,
}
"""Names whose expectations are exact closed forms ("exp" and "gaussian" with their default
parameters; parameterised ones such as ``RectifiedMonomial(2)`` or ``Polynomial([...])`` are
passed as objects). "sign" and "step" have an NNGP but no NTK (their derivative is not a function)."""

QUADRATURE: dict[str, Callable] = {
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus,
    "silu": F.silu, "elu": F.elu,
}
"""Names computed by quadrature (derivative by autograd)."""


def get_activation(activation: str | Activation | Callable) -> Activation:
    """An `Activation` from a name, an `Activation`, or an elementwise callable on tensors.

    Args:
        activation: a name from `CLOSED_FORM` (exact kernels) or `QUADRATURE` (case-insensitive),
            an `Activation` (returned as it is), or a callable mapping a tensor to a tensor of
            the same shape (wrapped in `Activation`: kernels by quadrature, derivative by
            autograd).

    Returns:
        An `Activation`. An unknown name is a ValueError listing the known ones.
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        key = activation.lower()
        if key in CLOSED_FORM:
            return CLOSED_FORM[key]()
        if key in QUADRATURE:
            return Activation(QUADRATURE[key], name=key)
        known = ", ".join(sorted([*CLOSED_FORM, *QUADRATURE]))
        raise ValueError(f"unknown activation {activation!r}; known names: {known}. "
                         "Any elementwise callable on tensors works too, e.g. activation=torch.tanh.")
    if callable(activation):
        return Activation(activation)
    raise TypeError(f"activation must be a name, a torchntk Activation or a callable on tensors, "
                    f"got {type(activation).__name__}.")
