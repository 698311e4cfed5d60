"""Bivariate Gaussian expectations E[f(u) g(v)] by 2-D Gauss-Hermite quadrature.

With (u, v) ~ N(0, [[var1, cov], [cov, var2]]) and rho = cov / sqrt(var1 var2), write
u = s1 z1 and v = s2 (rho z1 + sqrt(1 - rho^2) z2) with z1, z2 iid N(0, 1), s = sqrt(var), so

    E[f(u) g(v)] ~= sum_i sum_j w_i w_j f(s1 x_i) g(s2 (rho x_i + sqrt(1 - rho^2) x_j))

over the n probabilists' Gauss-Hermite nodes x_i and weights w_i (sum w_i = 1). The rule is
exact for polynomials of degree < 2n in (z1, z2); for analytic f and g (tanh, sigmoid, softplus,
silu) the error falls geometrically with n, for functions with a kink (relu, elu) only
algebraically: `DEFAULT_NODES` in base.py tabulates measured accuracies.

Each kernel entry costs n^2 evaluations of g; entries are processed in chunks so that
temporaries stay near `_CHUNK_ELEMENTS` numbers whatever the tile size.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from ..numerics import correlation, safe_sqrt

_CHUNK_ELEMENTS = 1 << 21

Elementwise = Callable[[Tensor], Tensor]


@lru_cache(maxsize=32)
def _nodes_numpy(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / w.sum()


def gauss_hermite(n: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Nodes and weights of the n-point rule for E[h(z)], z ~ N(0, 1); weights sum to 1."""
    x, w = _nodes_numpy(n)
    return (torch.as_tensor(x, dtype=dtype, device=device),
            torch.as_tensor(w, dtype=dtype, device=device))


def bivariate_expectation(f: Elementwise, g: Elementwise, var1: Tensor, var2: Tensor,
                          cov: Tensor, nodes: int) -> Tensor:
    """E[f(u) g(v)] for (u, v) centred Gaussian with the given (broadcastable) moments.

    Returns a tensor of the broadcast shape of (var1, var2, cov).
    """
    rho, _ = correlation(var1, var2, cov)
    shape = torch.broadcast_shapes(var1.shape, var2.shape, cov.shape)
    # The rule is not symmetric in (u, v); for f = g, integrating the larger scale along z1
    # makes E(x, x') and E(x', x) the same computation, so kernels stay exactly symmetric.
    if f == g:  # (bound methods are equal, not identical)
        var1, var2 = torch.maximum(var1, var2), torch.minimum(var1, var2)
    s1 = safe_sqrt(var1).expand(shape).reshape(-1, 1)
    s2 = safe_sqrt(var2).expand(shape).reshape(-1, 1, 1)
    rho = rho.expand(shape).reshape(-1, 1, 1)
    x, w = gauss_hermite(nodes, cov.dtype, cov.device)
    xi, xj = x.view(1, -1, 1), x.view(1, 1, -1)
    chunk = max(1, _CHUNK_ELEMENTS // (nodes * nodes))
    pieces = []
    for start in range(0, s1.shape[0], chunk):
        stop = start + chunk
        fu = f(s1[start:stop] * x)                                     # (m, n)
        comp = safe_sqrt(1 - rho[start:stop] ** 2)
        gv = g(s2[start:stop] * (rho[start:stop] * xi + comp * xj))    # (m, n, n)
        inner = gv @ w                                                 # (m, n)
        pieces.append((fu * inner) @ w)
    return torch.cat(pieces).reshape(shape)
