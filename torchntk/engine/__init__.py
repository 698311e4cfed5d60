"""The kernel engine: one description of a network gives its exact infinite-width kernels and,
from the same layers, its finite networks (torchntk.networks) and its plain-data form.

Every layer implements one protocol (base.py) on one kernel state (state.py); a fully-connected
stack is the case with no spatial axes. Modules:

- base: the layer protocol, the build context of finite networks, scale checks;
- signal: what each layer's output is, checked before any kernel is computed;
- state, layout: the kernel state of a tile and the layouts of its tensors;
- maps, windows: the kernel maps (affine, linear, nonlinearity, normalisation) and window sums;
- dense, pointwise, spatial, local, attention, graph: the layers (Dense; nonlinearities, LayerNorm;
  Conv, pooling, readouts; ConvLocal, ConvTranspose; SelfAttention; Aggregate, with the adjacency as a
  side input);
- branches, serial: the combinators (FanOut, parallel, FanInSum, FanInConcat; serial, mlp);
- tiles: the tile walk over (N1, N2);
- serialize: descriptions as plain JSON data (`from_dict`).
"""

from .attention import SelfAttention as SelfAttention
from .branches import FanInConcat as FanInConcat
from .branches import FanInProd as FanInProd
from .branches import FanInSum as FanInSum
from .branches import FanOut as FanOut
from .dense import Dense as Dense
from .graph import Aggregate as Aggregate
from .local import ConvLocal as ConvLocal
from .local import ConvTranspose as ConvTranspose
from .pointwise import LayerNorm as LayerNorm
from .serial import Serial as Serial
from .serial import expand_outputs as expand_outputs
from .serial import mlp as mlp
from .serial import parallel as parallel
from .serial import serial as serial
from .serialize import from_dict as from_dict
from .signal import ArchitectureError as ArchitectureError
from .spatial import AvgPool as AvgPool
from .spatial import Conv as Conv
from .spatial import Flatten as Flatten
from .spatial import GlobalAvgPool as GlobalAvgPool
from .spatial import GlobalSumPool as GlobalSumPool
from .spatial import MaxPool as MaxPool
from .spatial import SumPool as SumPool
