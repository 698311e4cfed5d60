r"""Monte Carlo estimates of the NNGP and NTK kernels from random finite networks.

::

    mc = monte_carlo_kernels(spec, x1, x2=None, width=1024, n_samples=64, seed=0)
    mc.nngp, mc.ntk, mc.nngp_stderr, mc.ntk_stderr          # (N1, N2) each

For :math:`S` independent random networks :math:`f^{(s)}` with :math:`k` outputs (drawn from a
description, ``spec.network(width=..., out_features=..., seed=...)``, or from a zero-argument
factory returning a fresh module):

.. math::

    \text{nngp}(x, x') = \frac1S \sum_s \frac1k \sum_k f^{(s)}_k(x)\, f^{(s)}_k(x'), \qquad
    \text{ntk}(x, x') = \frac1S \sum_s \frac1k \sum_k \Theta^{(s)}_{kk}(x, x'):

the outputs' covariance (the mean :math:`\mathbb E f` is 0 for networks symmetric under
:math:`W \to -W`) and the empirical NTK's output trace, with standard errors
:math:`\text{sd}_s / \sqrt S` entry by entry (the sample standard deviation over the :math:`S`
networks, ddof 1). As the width grows the estimates tend to ``spec.kernels`` (Proposition 1,
Theorem 1), up to the :math:`O(1/\text{width})` finite-width bias; for
architectures with no closed form (a factory) they are the kernels. The NTK goes through
`empirical_ntk` in chunks, so memory stays bounded for large N (one network, a chunk's features,
and a few (N1, N2) accumulators).

Network s is drawn with the seed ``sample_seed(seed, s)``; the same seed gives the same numbers.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._side import check_rows, given, split

__all__ = ["MonteCarloKernels", "monte_carlo_kernels", "sample_seed"]

KERNELS = ("both", "nngp", "ntk")


@dataclass
class MonteCarloKernels:
    r"""Monte Carlo kernel estimates over ``n_samples`` random networks, each (N1, N2).

    Attributes:
        nngp: the sample mean of the outputs' outer products (None when not asked for).
        ntk: the sample mean of the empirical NTKs (None when not asked for).
        nngp_stderr: the standard error of ``nngp``, :math:`\text{sd} / \sqrt S`.
        ntk_stderr: the standard error of ``ntk``, :math:`\text{sd} / \sqrt S`.
        n_samples: :math:`S`, the number of networks averaged.
        width: the hidden width given (None for a factory).
    """

    nngp: Any
    ntk: Any
    nngp_stderr: Any
    ntk_stderr: Any
    n_samples: int
    width: int | None


def sample_seed(seed: int, index: int) -> int:
    """The seed of network ``index`` of a run with ``seed`` (numpy's SeedSequence mixes the pair)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint32)[0]) & 0x7FFFFFFF


def monte_carlo_kernels(spec_or_factory: Any, x1: Any, x2: Any | None = None, *, width: int = 1024,
                        n_samples: int | Sequence[int] = 64, seed: int = 0, out_features: int = 1,
                        kernels: str = "both", dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None, method: str = "auto",
                        batch_size: int | None = None, adjacency: Any = None, mask: Any = None,
                        progress: bool = False) -> MonteCarloKernels | list[MonteCarloKernels]:
    r"""Average the empirical NNGP and NTK over random finite networks (see the module doc):
    :math:`\frac1S \sum_s \frac1k \sum_k f^{(s)}_k(x) f^{(s)}_k(x')` and
    :math:`\frac1S \sum_s \frac1k \sum_k \Theta^{(s)}_{kk}(x, x')`.

    Args:
        spec_or_factory: a network description with ``.network(width=, out_features=, seed=)`` (e.g.
            ``tn.mlp(...)``, or a convolutional ``tn.serial(...)``), or a zero-argument callable
            returning a fresh nn.Module (called under ``torch.manual_seed(sample_seed(seed, s))``,
            so its default initialisation is reproducible).
        x1: inputs (N1, ...) (tensor or numpy; numpy in gives numpy out).
        x2: inputs (N2, ...), or None for x1 against itself.
        width: the hidden width of the description's networks (ignored for a factory).
        n_samples: :math:`S \ge 2` networks; or an increasing list of counts, giving running
            estimates after each (one pass over max(list) networks).
        seed: a non-negative int; network s uses ``sample_seed(seed, s)``.
        out_features: output units :math:`k` of the description's networks (the estimates
            average over them; ignored for a factory).
        kernels: "both" (default), "nngp" (skips the NTK, much cheaper) or "ntk".
        dtype: the networks' dtype: default x1's if it is a float tensor, else torch.float64.
            A factory's modules are converted to it.
        device: where the networks live (default: x1's device).
        method: passed to `empirical_ntk` ("auto", "structured", "jacobian" or "ntk_vp").
        batch_size: passed to `empirical_ntk` (chunks of inputs bound its memory).
        adjacency: the graphs' adjacencies for a description with `Aggregate`, as
            ``spec.kernels`` takes them: a tuple (A1, A2) with x2, one A1 for x1 alone (each
            (N, V, V) or an integer edge list (N, E, 2)).
        mask: which positions hold data, boolean (N, *positions), a tuple (m1, m2) with x2 or
            one m1 for x1 alone, as ``spec.kernels`` takes it. Both side inputs go to every
            network's forward (``net(x, adjacency=, mask=)``, also a factory's) and to the
            empirical NTK (``forward_kwargs``), row by row with the inputs.
        progress: show a progress bar (rich) over the networks.

    Returns:
        A `MonteCarloKernels`, or a list of them (one per count) when ``n_samples`` is a list.
    """
    from .empirical import empirical_nngp, empirical_ntk

    side1, side2 = split(given({"adjacency": adjacency, "mask": mask}), paired=x2 is not None)
    counts, as_list = _counts(n_samples)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}.")
    draw, net_width = _drawer(spec_or_factory, width, out_features)
    numpy_out = isinstance(x1, np.ndarray) and (x2 is None or isinstance(x2, np.ndarray))
    dtype = dtype or (x1.dtype if isinstance(x1, Tensor) and x1.is_floating_point() else torch.float64)
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}.")
    device = torch.device(device) if device is not None else (x1.device if isinstance(x1, Tensor) else None)
    t1, t2 = (None if x is None else _as_tensor(x, name, dtype, device) for x, name in ((x1, "x1"), (x2, "x2")))
    check_rows(side1, t1.shape[0], "x1")
    if side2 is not None:
        check_rows(side2, t2.shape[0], "x2")
    side1, side2 = (None if side is None else {k: _as_side(v, dtype, t1.device) for k, v in side.items()}
                    for side in (side1, side2))
    keywords = None if not side1 else side1 if side2 is None else (side1, side2)   # forward_kwargs
    want_nngp, want_ntk = kernels in ("both", "nngp"), kernels in ("both", "ntk")
    stats = {name: _Running() for name, on in (("nngp", want_nngp), ("ntk", want_ntk)) if on}
    results: list[MonteCarloKernels] = []
    bar = _Progress(progress, counts[-1])
    try:
        for s in range(counts[-1]):
            net = draw(sample_seed(seed, s), dtype, t1.device, tuple(t1.shape[1:]))
            if want_nngp:
                stats["nngp"].add(empirical_nngp(net, t1, t2, outputs="trace", batch_size=batch_size,
                                                 forward_kwargs=keywords))
            if want_ntk:
                stats["ntk"].add(empirical_ntk(net, t1, t2, outputs="trace", method=method, batch_size=batch_size,
                                               forward_kwargs=keywords))
            bar.advance()
            if s + 1 in counts:
                results.append(_result(stats, s + 1, net_width, numpy_out))
    finally:
        bar.close()
    return results if as_list else results[0]


class _Running:
    """Running mean and sum of squared deviations (Welford), in float64, entry by entry."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, value: Tensor) -> None:
        value = value.detach().to(torch.float64)
        if not bool(torch.isfinite(value).all()):
            raise ValueError("a network gave NaN or infinite kernel entries (overflowing outputs?); check the "
                             "architecture, its scales and the inputs.")
        self.count += 1
        if self.mean is None:
            self.mean, self.m2 = value.clone(), torch.zeros_like(value)
            return
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    def estimate(self) -> tuple[Tensor, Tensor]:
        return self.mean.clone(), (self.m2 / (self.count - 1) / self.count).sqrt()


def _result(stats: dict[str, _Running], count: int, width: int | None, numpy_out: bool) -> MonteCarloKernels:
    out: dict[str, Any] = {}
    for name in ("nngp", "ntk"):
        mean, err = stats[name].estimate() if name in stats else (None, None)
        if numpy_out and mean is not None:
            mean, err = mean.cpu().numpy(), err.cpu().numpy()
        out[name], out[f"{name}_stderr"] = mean, err
    return MonteCarloKernels(out["nngp"], out["ntk"], out["nngp_stderr"], out["ntk_stderr"], count, width)


def _counts(n_samples: Any) -> tuple[list[int], bool]:
    as_list = isinstance(n_samples, Sequence) and not isinstance(n_samples, (str, bytes))
    counts = list(n_samples) if as_list else [n_samples]
    for c in counts:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 2:
            raise ValueError(f"n_samples must be an integer >= 2 (a standard error needs two networks) or a list of "
                             f"them; got {n_samples!r}.")
    if not counts or any(b <= a for a, b in zip(counts, counts[1:], strict=False)):
        raise ValueError(f"a list of n_samples must be non-empty and strictly increasing, got {n_samples!r}.")
    return [int(c) for c in counts], as_list


def _drawer(source: Any, width: int, out_features: int) -> tuple[Callable[[int, torch.dtype, Any], nn.Module],
                                                                 int | None]:
    """(draw(seed, dtype, device) -> a fresh network, the width or None)."""
    network = getattr(source, "network", None)
    if callable(network):
        for value, name in ((width, "width"), (out_features, "out_features")):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        accepted = _keywords(network)

        def draw(s: int, dtype: torch.dtype, device: Any, input_shape: tuple[int, ...] | None = None) -> nn.Module:
            extra: dict[str, Any] = {}
            if "input_shape" in accepted and input_shape is not None:   # build eagerly (architectures)
                extra["input_shape"] = input_shape
            if "dtype" in accepted:
                extra["dtype"] = dtype
            if "device" in accepted and device is not None:
                extra["device"] = device
            net = network(width=width, out_features=out_features, seed=s, **extra)
            return net if "dtype" in extra else net.to(dtype=dtype, device=device)

        return draw, int(width)
    if isinstance(source, nn.Module) or not callable(source):
        raise TypeError("spec_or_factory must be a network description (with .network(width=, out_features=, "
                        "seed=), e.g. tn.mlp(...)) or a zero-argument function returning a fresh nn.Module; got "
                        f"{type(source).__name__}" + (" (pass lambda: MyNet() so that every sample is a new random "
                                                      "network)" if isinstance(source, nn.Module) else "") + ".")

    def draw_factory(s: int, dtype: torch.dtype, device: Any, input_shape: Any = None) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            net = source()
        if not isinstance(net, nn.Module):
            raise TypeError(f"the factory must return an nn.Module, it returned {type(net).__name__}.")
        return net.to(dtype=dtype, device=device)

    return draw_factory, None


def _keywords(fn: Callable) -> set[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return {"dtype", "device"}
    return {p.name for p in params}


def _as_tensor(x: Any, name: str, dtype: torch.dtype, device: Any) -> Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers; got a numpy array of dtype {x.dtype}.")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or a numpy array of shape (N, ...), got {type(x).__name__}.")
    return x.to(dtype=dtype, device=device) if device is not None else x.to(dtype=dtype)


def _as_side(v: Any, dtype: torch.dtype, device: torch.device) -> Any:
    """A side input tensor on the networks' device, a floating one in their dtype (as x is);
    anything else as it is, for the empirical kernels to check."""
    if not isinstance(v, Tensor):
        return v
    return v.to(dtype=dtype, device=device) if v.is_floating_point() else v.to(device)


class _Progress:
    def __init__(self, show: bool, total: int) -> None:
        self.bar = None
        if show:
            from ._progress import rich_progress

            self.bar = rich_progress(transient=False)
            self.bar.start()
            self.task = self.bar.add_task("Monte Carlo networks", total=total)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
