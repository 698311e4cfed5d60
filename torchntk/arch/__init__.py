"""Architectures beyond fully-connected stacks: convolutions, pooling, residual branches and
LayerNorm, with exact infinite-width kernels, finite networks and their empirical NTK from one
description (see torchntk.spec.serial).

Modules: layout (kernel tensor layouts), windows (padding and window sums), state (the kernel
state of a tile), ops (kernel maps), signal (static checks), spatial / pointwise / branches
(the layers), evaluate (tiles), modules and network (finite networks), serialize (JSON).
"""

from .branches import FanInConcat as FanInConcat
from .branches import FanInSum as FanInSum
from .branches import FanOut as FanOut
from .pointwise import LayerNorm as LayerNorm
from .signal import ArchitectureError as ArchitectureError
from .spatial import AvgPool as AvgPool
from .spatial import Conv as Conv
from .spatial import Flatten as Flatten
from .spatial import GlobalAvgPool as GlobalAvgPool
from .spatial import MaxPool as MaxPool
