"""torchntk: Neural Tangent Kernels in PyTorch (Jacot, Gabriel, Hongler, 2018).

    import torchntk as tn
    spec = tn.mlp(depth=4, activation="relu", bias_std=0.1)
    K, T = spec.kernels(x)          # NNGP Sigma(L) and NTK Theta(L), infinite width
"""

from .activations import Abs as Abs
from .activations import Activation as Activation
from .activations import Cos as Cos
from .activations import Erf as Erf
from .activations import Gelu as Gelu
from .activations import Identity as Identity
from .activations import LeakyReLU as LeakyReLU
from .activations import PiecewiseLinear as PiecewiseLinear
from .activations import ReLU as ReLU
from .activations import Sin as Sin
from .activations import get_activation as get_activation
from .layers import Dense as Dense
from .spec import Serial as Serial
from .spec import expand_outputs as expand_outputs
from .spec import mlp as mlp
from .spec import serial as serial

__version__ = "0.1.0"
