"""torchntk: Neural Tangent Kernels in PyTorch (Jacot, Gabriel, Hongler, 2018).

>>> import torch, torchntk as tn
>>> spec = tn.mlp(depth=4, activation="relu", bias_std=0.1)
>>> x = torch.randn(5, 3, dtype=torch.float64)
>>> K, T = spec.kernels(x)          # NNGP Sigma(L) and NTK Theta(L), infinite width
>>> K.shape, T.shape
(torch.Size([5, 5]), torch.Size([5, 5]))

The conventions (parameterisation, depth, time scale, layouts) are in docs/conventions.md.
"""

from ._finite import MAX_DEPTH as MAX_DEPTH
from ._finite import KernelOverflowError as KernelOverflowError
from .activations import Abs as Abs
from .activations import Activation as Activation
from .activations import Cos as Cos
from .activations import Erf as Erf
from .activations import Exp as Exp
from .activations import Gaussian as Gaussian
from .activations import Gelu as Gelu
from .activations import Hermite as Hermite
from .activations import Identity as Identity
from .activations import LeakyReLU as LeakyReLU
from .activations import Monomial as Monomial
from .activations import PiecewiseLinear as PiecewiseLinear
from .activations import Polynomial as Polynomial
from .activations import Rbf as Rbf
from .activations import RectifiedMonomial as RectifiedMonomial
from .activations import ReLU as ReLU
from .activations import Sign as Sign
from .activations import Sin as Sin
from .activations import get_activation as get_activation
from .engine import Aggregate as Aggregate
from .engine import ArchitectureError as ArchitectureError
from .engine import AvgPool as AvgPool
from .engine import Conv as Conv
from .engine import ConvLocal as ConvLocal
from .engine import ConvTranspose as ConvTranspose
from .engine import Dense as Dense
from .engine import FanInConcat as FanInConcat
from .engine import FanInProd as FanInProd
from .engine import FanInSum as FanInSum
from .engine import FanOut as FanOut
from .engine import Flatten as Flatten
from .engine import GlobalAvgPool as GlobalAvgPool
from .engine import GlobalSumPool as GlobalSumPool
from .engine import LayerNorm as LayerNorm
from .engine import MaxPool as MaxPool
from .engine import SelfAttention as SelfAttention
from .engine import Serial as Serial
from .engine import SumPool as SumPool
from .engine import expand_outputs as expand_outputs
from .engine import from_dict as from_dict
from .engine import mlp as mlp
from .engine import parallel as parallel
from .engine import serial as serial

__version__ = "0.2.0"

from . import _vml

_vml.warm_up()   # oneMKL's lazy, racy first-call dispatch: resolve it here, on one thread (see _vml.py)

# Heavier parts load on first use, so `import torchntk` stays light.
_LAZY = {
    "NTKNetwork": "torchntk.networks",
    "empirical_ntk": "torchntk.empirical",
    "empirical_nngp": "torchntk.empirical",
    "ntk_operator": "torchntk.empirical.operator",
    "NTKOperator": "torchntk.empirical.operator",
    "gradient_sketch": "torchntk.empirical.sketch",
    "sketched_ntk": "torchntk.empirical.sketch",
    "linearize": "torchntk.taylor",
    "taylor_expand": "torchntk.taylor",
    "TaylorExpansion": "torchntk.taylor",
    "monte_carlo_kernels": "torchntk.monte_carlo",
    "MonteCarloKernels": "torchntk.monte_carlo",
    "predict_gradient_flow": "torchntk.dynamics",
    "GradientFlow": "torchntk.dynamics",
    "Prediction": "torchntk.dynamics",
    "train": "torchntk.training",
    "TrainingRun": "torchntk.training",
    "kernel_matrix": "torchntk.scale",
}

_SUBPACKAGES = ("dynamics", "empirical", "gpytorch", "model_io", "monte_carlo", "networks", "scale", "sklearn",
                "studies", "taylor", "training")
"""Parts reachable as attributes (``tn.scale.open_kernel_matrix``) after a bare ``import torchntk``:
they are imported on first access, as Python only binds a submodule once something imports it."""


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'torchntk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBPACKAGES})
