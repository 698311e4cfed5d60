"""scikit-learn adapters: estimators that fit like any other model, and GP kernels.

>>> import numpy as np
>>> from torchntk.sklearn import NTKRegressor, NTKClassifier, NTKKernel, NNGPKernel
>>> X, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20.0)
>>> mean, std = NTKRegressor(depth=3, ridge=1e-3).fit(X, y).predict(X[:4], return_std=True)
>>> mean.shape, std.shape
((4,), (4,))

Side inputs (adjacency, mask) travel in the rows of X: ``pack_rows(x, adjacency=A, mask=m)``
(`torchntk.sklearn.packing`).

Importing this module imports scikit-learn (an optional dependency: pip install
"torchntk[sklearn]"); ``import torchntk`` alone never does.
"""

from .estimators import NTKClassifier as NTKClassifier
from .estimators import NTKRegressor as NTKRegressor
from .kernels import NNGPKernel as NNGPKernel
from .kernels import NTKKernel as NTKKernel
from .packing import pack_rows as pack_rows
