r"""Training dynamics in the infinite-width limit: kernel gradient flow and gradient descent.

>>> import torch, torchntk as tn
>>> spec = tn.mlp(depth=3, activation="relu", bias_std=0.1)
>>> x_train, y_train, x_test = torch.randn(8, 2), torch.randn(8, 1), torch.randn(3, 2)
>>> pred = tn.predict_gradient_flow(spec, x_train, y_train, x_test, t=[0, 1, 10, float("inf")])
>>> pred.mean.shape, pred.cov.shape              # (T, M, k), (T, M, M)
(torch.Size([4, 3, 1]), torch.Size([4, 3, 3]))
>>> pred.train_mean.shape, pred.train_cov.shape  # (T, N, k), (T, N, N)
(torch.Size([4, 8, 1]), torch.Size([4, 8, 8]))

Time is the paper's: :math:`t = \eta\, s` after :math:`s` steps of full-batch gradient descent
with learning rate :math:`\eta` on :math:`C = \frac{1}{2N} \sum_i \lVert f(x_i) - y_i \rVert^2`, so
:math:`f_t(X) = y + e^{-t \Theta / N} (f_0(X) - y)` (docs/conventions.md). Modules: `flow` (closed forms through
one eigendecomposition, or `krylov` block Lanczos and a `refined` float32 Cholesky, chosen by
`methods`), `stored` (means from a kernel store on disk), `spectral` (the time functions), `pca`
(kernel principal components), `ode` (any cost, by solve_ivp), `losses` (costs shared with
training), `infinite` (from a spec).
"""

from .flow import GradientFlow as GradientFlow
from .infinite import predict_gradient_descent as predict_gradient_descent
from .infinite import predict_gradient_flow as predict_gradient_flow
from .losses import cross_entropy as cross_entropy
from .losses import mse as mse
from .ode import solve_kernel_flow as solve_kernel_flow
from .pca import PrincipalComponents as PrincipalComponents
from .pca import principal_components as principal_components
from .prediction import Prediction as Prediction
from .spectral import max_learning_rate_from as _max_learning_rate_from
from .stored import StoredReport as StoredReport
from .stored import predict_from_store as predict_from_store


def max_learning_rate(ntk_train) -> float:
    r""":math:`2N / \lambda_{\max}(\Theta(X, X))`: the largest learning rate for which full-batch
    gradient descent on :math:`C = \frac{1}{2N} \sum_i \lVert f(x_i) - y_i \rVert^2` with this
    (fixed) kernel converges.

    Args:
        ntk_train: :math:`\Theta(X, X)`, shape (N, N) (tensor or numpy array).
    """
    import torch

    from ._checks import as_square_kernel

    kernel = as_square_kernel(ntk_train, "ntk_train")
    return _max_learning_rate_from(torch.linalg.eigvalsh(kernel), kernel.shape[0])


__all__ = ["GradientFlow", "Prediction", "PrincipalComponents", "cross_entropy", "max_learning_rate", "mse",
           "predict_from_store", "predict_gradient_descent", "predict_gradient_flow", "principal_components",
           "solve_kernel_flow", "StoredReport"]
