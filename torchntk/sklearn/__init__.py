"""scikit-learn adapters: estimators that fit like any other model, and GP kernels.

    from torchntk.sklearn import NTKRegressor, NTKClassifier, NTKKernel, NNGPKernel

Importing this module imports scikit-learn (an optional dependency: pip install
"torchntk[sklearn]"); ``import torchntk`` alone never does.
"""

from .estimators import NTKClassifier as NTKClassifier
from .estimators import NTKRegressor as NTKRegressor
from .kernels import NNGPKernel as NNGPKernel
from .kernels import NTKKernel as NTKKernel
