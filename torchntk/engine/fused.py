r"""One compiled pass for the kernel map of a piecewise-linear nonlinearity (ReLU, LeakyReLU, ...).

For :math:`s(u) = a u` (u > 0), :math:`b u` (u < 0), with :math:`h = (a - b)^2 / 2`, at every
entry of a block, with :math:`\rho = K / (\sigma_1 \sigma_2)` the correlation and
:math:`\theta = \arccos \rho`:

.. math::

    \Sigma' = \sigma_1 \sigma_2 \Big(\frac{h}{\pi} \big(\sin\theta + (\pi - \theta) \rho\big) + a b\, \rho\Big),
    \qquad
    \Theta' = \Theta \Big(\frac{h}{\pi} (\pi - \theta) + a b\Big).

Eagerly (`torchntk.activations.PiecewiseLinear`) that is about a dozen passes over the block
(divide, clamp, snap, arccos, the square root, products), which take most of a convolutional
kernel's time; compiled with torch.compile (its C++ backend on CPU) it is one pass that reads
K and Theta and writes both results.

The compiled pass runs where it pays and nothing can go wrong with it: on CPU blocks of at least
`MIN_ENTRIES` entries, nothing differentiated, every variance positive, and only if
compiling works on this machine (a C++ compiler; a failed compile is reported once as a
warning and the eager path is kept). ``TORCHNTK_COMPILE`` chooses: ``auto`` (the default, as
above), ``never`` (always the eager path), ``always`` (every block that qualifies otherwise,
whatever its size: what the tests use to compare the two). The first compile of a process takes
seconds (tens of seconds with a cold cache); later calls of any block shape reuse it.
The compiled and the eager results agree to round-off: they are the same formulas in another
order of operations (tests/engine/test_fused.py).
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ..numerics import snap_width

MIN_ENTRIES = 1 << 21
"""Entries of a block below which ``auto`` keeps the eager path (a 2M-entry block takes ~0.1 s
eagerly, so a compile of seconds is worth it only in calls that repeat it many times)."""

MODES = ("auto", "never", "always")

_compiled: Callable | None = None
_broken = False


def piecewise_map(cov: Tensor, ntk: Tensor | None, s1: Tensor, s2: Tensor, half_jump: Tensor, ab: Tensor,
                  snap: Tensor) -> tuple[Tensor, Tensor | None]:
    """(Sigma', Theta') of the module docstring from K = ``cov``, Theta = ``ntk`` (or None) and the
    square roots of the variances ``s1``, ``s2`` (broadcasting against cov, all positive);
    ``half_jump`` h, ``ab`` and the correlation ``snap`` width (`torchntk.numerics.snap_width`)
    as 0-dim tensors, so that one compiled graph serves every slope and dtype's constants."""
    norm = s1 * s2
    rho = (cov / norm).clamp(-1.0, 1.0)
    rho = torch.where(rho > 1 - snap, torch.ones_like(rho), rho)
    pi_j0 = torch.arccos(-rho)                                   # pi - theta, exact near rho = -1 too
    scale = half_jump / math.pi
    ess = ((torch.sqrt(1 - rho * rho) + pi_j0 * rho) * scale + ab * rho) * norm
    if ntk is None:
        return ess, None
    return ess, ntk * (pi_j0 * scale + ab)


def mode() -> str:
    """``TORCHNTK_COMPILE`` (``auto`` when unset), checked."""
    value = os.environ.get("TORCHNTK_COMPILE", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"TORCHNTK_COMPILE must be one of {MODES}, got {value!r}.")
    return value


def applies(cov: Tensor, v1: Tensor, v2: Tensor) -> bool:
    """Whether the compiled pass should compute this block (see the module docstring)."""
    chosen = mode()
    if chosen == "never" or _broken or cov.device.type != "cpu" or torch.is_grad_enabled():
        return False
    if chosen == "auto" and cov.numel() < MIN_ENTRIES:
        return False
    if shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("c++") is None:
        return False
    return bool((v1 > 0).all()) and bool((v2 > 0).all())


def run(cov: Tensor, ntk: Tensor | None, v1: Tensor, v2: Tensor, half_jump: float,
        ab: float) -> tuple[Tensor, Tensor | None] | None:
    """`piecewise_map` compiled, on the variances ``v1``, ``v2``; None if it cannot be compiled
    here (after one warning; the caller then takes the eager path)."""
    global _compiled, _broken
    constants = [torch.tensor(c, dtype=cov.dtype) for c in (half_jump, ab, snap_width(cov.dtype))]
    try:
        if _compiled is None:
            _compiled = torch.compile(piecewise_map, dynamic=True)
        return _compiled(cov, ntk, v1.sqrt(), v2.sqrt(), *constants)
    except Exception as exc:   # no working compiler, an unsupported build: the eager path is exact too
        _broken = True
        warnings.warn(f"torchntk: the compiled kernel map is unavailable ({type(exc).__name__}: {exc}); using the "
                      "eager one. Set TORCHNTK_COMPILE=never to skip the attempt.", RuntimeWarning, stacklevel=3)
        return None
