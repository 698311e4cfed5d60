"""Finite networks beside the infinite-width theory: the paper's experiments and width sweeps.

>>> from torchntk.studies import NetworkSettings, SweepSettings, load_data, quick_settings
>>> settings = SweepSettings(network=NetworkSettings(depth=3, activation="tanh"), widths=(64, 256, 1024))
>>> data = load_data("gaussian", 12, dim=3)
>>> data.x.shape, data.y.shape
((12, 3), (12, 1))

``study(settings, data, seed=0, out="study/")`` then runs the sweep and writes the report (a minute
or more), and ``reproduce(quick_settings(), seed=0, out="report/")`` is what `torchntk reproduce`
runs (a few minutes); docs/guides/studies.md shows both.

Modules: `data` (built-in data sets), `rates` (log-log slopes with uncertainty), `measures`
(the theorems' distances), `width_sweep` (the width sweep's networks measured), `theorems` and
`proposition1` (the appendix's statements judged on it), `fig1_ntk`, `fig2_regression`, `fig3_pca`
(the paper's Section 6), `plots`, `report`, `runner`.
"""

from .config import Fig1Settings as Fig1Settings
from .config import Fig2Settings as Fig2Settings
from .config import Fig3Settings as Fig3Settings
from .config import NetworkSettings as NetworkSettings
from .config import ReproduceSettings as ReproduceSettings
from .config import SweepSettings as SweepSettings
from .config import full_settings as full_settings
from .config import quick_settings as quick_settings
from .data import Dataset as Dataset
from .data import load_data as load_data
from .rates import SlopeFit as SlopeFit
from .rates import fit_convergence as fit_convergence
from .rates import fit_loglog as fit_loglog
from .runner import reproduce as reproduce
from .runner import study as study
