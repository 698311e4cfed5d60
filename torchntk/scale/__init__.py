"""Large-N kernels: tiled, resumable, out-of-core and distributed kernel matrices, and solvers.

>>> import os, tempfile
>>> import numpy as np, torchntk as tn
>>> from torchntk.scale import KernelRegression, conjugate_gradients
>>> spec, x, y = tn.mlp(depth=3), np.random.default_rng(0).normal(size=(300, 4)), np.ones((300, 1))
>>> store = os.path.join(tempfile.mkdtemp(), "K.zarr")
>>> K = tn.kernel_matrix(spec, x, store=store, tile=128, progress=False)   # on disk, resumable, Dask-ready
>>> K[:100, :100].shape, np.asarray(K).shape                                 # array-like view
((100, 100), (300, 300))
>>> result = conjugate_gradients(K, y, ridge=1e-3, rank=32)   # streams tiles; Nystrom-preconditioned
>>> bool(result.converged)
True
>>> model = KernelRegression(spec, store=store, ridge=1e-3, tile=128).fit(x, y)
>>> model.predict(x[:7]).shape                                # t = inf mean, or GP posterior mean
(7, 1)

zarr and dask are optional dependencies, imported only when used.
"""

from .compute import kernel_matrix as kernel_matrix
from .matrix import KernelMatrix as KernelMatrix
from .matrix import open_kernel_matrix as open_kernel_matrix
from .operators import ComputedKernel as ComputedKernel
from .operators import StoredKernel as StoredKernel
from .preconditioners import NystromPreconditioner as NystromPreconditioner
from .progress import RunSummary as RunSummary
from .regression import KernelRegression as KernelRegression
from .solvers import SolveResult as SolveResult
from .solvers import cholesky_solve as cholesky_solve
from .solvers import conjugate_gradients as conjugate_gradients
