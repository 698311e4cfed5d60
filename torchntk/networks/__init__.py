"""Finite networks of network descriptions, in the NTK (or the standard) parameterisation.

- weighted: the weighted layers `NTKDense`, `NTKConv`, `NTKConvLocal` and `NTKConvTranspose` and
  their per-layer generators;
- attention: `NTKSelfAttention`, multi-head self-attention with tied queries and keys;
- modules: the parameter-free modules (nonlinearities, pooling, readouts, LayerNorm, branches);
- network: `NTKNetwork`, the one finite network class of every description, and `build_network`.

The engine's layers build the modules of weighted and modules; network builds from the engine's
descriptions, so it is loaded on first use (``torchntk.networks.NTKNetwork``) rather than here.
"""

from .attention import NTKSelfAttention as NTKSelfAttention
from .weighted import PARAMETERIZATIONS as PARAMETERIZATIONS
from .weighted import NTKConv as NTKConv
from .weighted import NTKConvLocal as NTKConvLocal
from .weighted import NTKConvTranspose as NTKConvTranspose
from .weighted import NTKDense as NTKDense
from .weighted import layer_generator as layer_generator

_FROM_NETWORK = ("NTKNetwork", "build_network")


def __getattr__(name: str):
    if name in _FROM_NETWORK:
        from . import network
        return getattr(network, name)
    raise AttributeError(f"module 'torchntk.networks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_FROM_NETWORK])
