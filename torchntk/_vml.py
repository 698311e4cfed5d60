"""Resolve oneMKL's vector-math (VML) dispatch once, on one thread, before any kernel runs.

PyTorch's CPU build computes many elementwise functions (arccos, sqrt, erf, exp, ...) with
oneMKL's VML, which picks each function's implementation lazily, on its first call. With oneMKL
2024.2 (the version PyTorch's wheels link, torch 2.13 included) two intra-op threads that make
that first call at the same time can race, and one thread's chunk is then computed by the
low-accuracy "EP" implementation although high accuracy was asked for (pytorch/pytorch issue
188792; fixed from oneMKL 2025.0). That matches the one wrong kernel torchntk was seen to
compute: only the first tile of a process's first kernel, only with two or more threads, in the
piecewise-linear path whose arccos and sqrt passes run on large blocks (an arccos error near a
correlation of 1 reaches the NTK at first order: 5e-7 was seen, 2e-11 in the NNGP). Later calls
and single-threaded runs were always exact.

`warm_up` calls every VML-backed function once on a one-element tensor of each floating dtype.
One element never splits across threads, so each dispatch resolves on the calling thread, and
every later call, threaded or not, finds it resolved. It costs a few microseconds per function
and runs when torchntk is imported.
"""

from __future__ import annotations

import torch

# The unary functions PyTorch's CPU kernels hand to VML (aten/src/ATen/cpu/vml.h), plus the few
# others torchntk's kernels call; calling a function that does not use VML is harmless.
_FUNCTIONS = (
    torch.acos, torch.asin, torch.atan, torch.acosh, torch.asinh, torch.atanh, torch.sqrt, torch.rsqrt,
    torch.exp, torch.expm1, torch.log, torch.log1p, torch.log2, torch.log10, torch.sin, torch.cos, torch.tan,
    torch.sinh, torch.cosh, torch.tanh, torch.erf, torch.erfc, torch.erfinv, torch.lgamma, torch.digamma,
    torch.abs, torch.ceil, torch.floor, torch.trunc, torch.round, torch.reciprocal, torch.sigmoid,
)

_done = False


def warm_up() -> None:
    """Make the first call of every VML function, single-threaded (idempotent)."""
    global _done
    if _done:
        return
    _done = True
    for dtype in (torch.float32, torch.float64):
        one = torch.full((1,), 0.5, dtype=dtype)
        for function in _FUNCTIONS:
            function(one)
