"""Large-N kernels: tiled, resumable, out-of-core and distributed kernel matrices, and solvers.

    K = torchntk.kernel_matrix(spec, x, store="K.zarr")       # on disk, resumable, Dask-ready
    K[:100, :100], np.asarray(K)                               # array-like view
    result = conjugate_gradients(K, y, ridge=1e-3)             # streams tiles; Nystrom-preconditioned
    model = KernelRegression(spec, store="K.zarr", ridge=1e-3).fit(x, y)
    model.predict(x_test)                                      # t = inf mean, or GP posterior mean

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
