"""Chunk sizes from a memory budget: features, the panel of reused features, and activations.

The peak memory of `blocks.assemble` is about

    panel + B (F + A)            (+ B^2 T for "ntk_vp")

with B inputs per chunk, F the bytes of one input's features (`point_bytes` of the method), A the
bytes its forward keeps for the backward plus COTANGENTS k copies of the largest of them
(`activation_bytes`, measured on one input), T the tangent bytes per pair of inputs of a
vector-product block (`NTKVectorMethod.pair_bytes`), and the panel the x1 features kept for reuse.
When all of x1's features fit beside one chunk, each input's features are computed once (twice at
most for x2 None); otherwise every panel streams all of x2 past it, so the chunks are kept small
(an eighth of the budget) to give the panel as much as possible: x2's features are then
recomputed about N1 F / (7/8 budget) times (raise ``max_memory``, or use "ntk_vp", whose
features are the inputs themselves, to avoid that).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .conv_method import ConvStructuredMethod
from .keywords import Inputs, call
from .ntk_vp import NTKVectorMethod
from .structured import StructuredMethod

COTANGENTS = 3
"""Live copies of the largest activation per output in a backward pass vmapped over k outputs
(its cotangent, the next layer's, a weight-gradient temporary). Measured: peak resident memory of
"jacobian" on a 2-layer CNN with 32 channels on 32 x 32 images, 32 inputs, k = 10, rose by
164 MiB, against 162 MiB planned with 3 (80 MiB with 1)."""

UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_bytes(value: Any, name: str = "max_memory") -> int:
    """A positive number of bytes from an int or a string such as "4GiB", "512 MB" or "1e9"."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number of bytes (an int, or a string such as '4GiB'), got {value!r}.")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", value)
        if match is None or match.group(2).lower() not in UNITS:
            raise ValueError(f"{name} must be a number of bytes or a string such as '4GiB', '512MiB' or '2GB'; "
                             f"got {value!r}.")
        number = float(match.group(1)) * UNITS[match.group(2).lower()]
    else:
        raise ValueError(f"{name} must be a number of bytes (an int, or a string such as '4GiB'), "
                         f"got {type(value).__name__}.")
    if not math.isfinite(number) or number < 1:
        raise ValueError(f"{name} must be at least 1 byte, got {value!r}.")
    return int(number)


def activation_bytes(model: nn.Module, x: Tensor | Inputs, k: int) -> tuple[int, int]:
    """(A, saved) for one input: the bytes of the tensors one input's forward saves for the
    backward (counted by torch.autograd.graph.saved_tensors_hooks, each storage once, not counting
    the parameters and buffers themselves), plus COTANGENTS k copies of the largest of them for
    the backward of k outputs; and the saved bytes alone. (0, 0) if the probe fails (the
    method then reports the model's error)."""
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        try:
            key = t.untyped_storage().data_ptr()
            nbytes = t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):  # no plain storage (nested, sparse): count its elements
            key, nbytes = id(t), t.numel() * t.element_size()
        if key not in own:
            seen[key] = max(seen.get(key, 0), nbytes)
        return t

    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            call(model, x[:1].clone())  # outputs dropped: no backward runs, no .grad is written
    except Exception:  # noqa: BLE001 - a probe only: the computation itself reports the error
        return 0, 0
    largest = max(seen.values(), default=0)
    saved = sum(seen.values())
    return saved + COTANGENTS * k * largest, saved


@dataclass(frozen=True)
class Plan:
    """Inputs per chunk, memory for the panel of kept features, the planned peak and the budget
    in bytes, and the per-input bytes of features and activations it was planned from."""

    batch_size: int
    panel_bytes: int
    peak: int
    budget: int = 0
    feature: float = 0.0
    activation: float = 0.0


def plan(n1: int, n2: int, feature: float, activation: float, budget: int, *, pair: float = 0.0,
         batch_size: int | None = None, strict: bool = True) -> Plan:
    """Chunks and panel for N1 x N2 inputs within ``budget`` bytes (see the module doc).

    ``feature`` (F) and ``activation`` (A) are bytes per input, ``pair`` (T) bytes per pair of a
    block. With ``batch_size`` given only the panel is sized (a ValueError if its chunk alone
    exceeds the budget, unless not ``strict``). Where all of x1's features fit
    beside a chunk, the chunk is the largest that does (larger chunks make faster products).
    """
    per_input = feature + activation
    n = max(n1, n2)

    def chunk_bytes(b: int) -> float:
        return b * per_input + b * b * pair

    if strict and batch_size is not None and chunk_bytes(batch_size) > budget:
        raise ValueError(f"batch_size={batch_size} needs about {int(chunk_bytes(batch_size))} bytes per chunk "
                         f"(features and activations), more than max_memory={budget}: give a smaller batch_size, or "
                         "leave it out to have it sized from max_memory.")

    if batch_size is None:
        if chunk_bytes(1) > budget:
            raise ValueError(f"max_memory={budget} bytes is too small: one input needs about {int(chunk_bytes(1))} "
                             "bytes (features and activations); give a larger max_memory.")
        if n1 * feature + chunk_bytes(1) <= budget:  # all of x1 fits beside a chunk: the largest such chunk
            batch_size = _largest(lambda b: n1 * feature + chunk_bytes(b) <= budget, n)
        else:  # x1 does not fit in one panel: small chunks, a large panel
            batch_size = _largest(lambda b: chunk_bytes(b) <= budget / 8, n)
    panel = max(0, int(budget - chunk_bytes(batch_size)))
    return Plan(batch_size, panel, int(min(panel, n1 * feature) + chunk_bytes(batch_size)), budget, feature, activation)


def choose_chunks(runner: Any, model: nn.Module, x1: Tensor | Inputs, x2: Tensor | Inputs | None, k: int, *,
                  dtype: torch.dtype, full: bool, diagonal: bool, batch_size: int | None, budget: int | None,
                  default_budget: int, default_panel: int) -> Plan:
    """The chunking of one empirical-NTK computation by ``runner`` (a `ChunkMethod`): `plan`
    with the method's feature bytes (entries of ``dtype``) and the model's measured activations;
    without ``budget``, ``default_budget`` (and with ``batch_size`` given, a panel of
    ``default_panel``)."""
    structured = isinstance(runner, (StructuredMethod, ConvStructuredMethod))
    element = torch.empty((), dtype=dtype).element_size()
    # The structured methods' point_bytes already count their activations and deltas.
    activation, saved = (0, 0) if structured else activation_bytes(model, x1, k)
    feature, pair = runner.point_bytes(element), 0.0
    if isinstance(runner, NTKVectorMethod):  # its features are the inputs; the k P g's of an x2 row are work
        one = x1[:1]   # with its keyword tensors, which are features too
        activation += feature
        feature = float(one.nbytes if isinstance(one, Inputs) else one.numel() * one.element_size())
        pair = runner.pair_bytes(saved)
    n1, n2 = x1.shape[0], x1.shape[0] if x2 is None else x2.shape[0]
    if diagonal:  # no panel: a chunk meets only itself (or the same rows of x2), row by row
        n1, feature, activation, pair = 0, feature * (1 if x2 is None else 2), activation + pair, 0.0
    total = default_budget if budget is None else budget
    chosen = plan(n1, n2, feature, activation, total, pair=pair, batch_size=batch_size, strict=budget is not None)
    if batch_size is None and not diagonal and x2 is None:
        b, n = chosen.batch_size, max(n1, n2)
        if full and k > 1 and isinstance(runner, StructuredMethod):
            # The (N k)^2 Grams dominate here: quarter chunks skip 3/8 of them by symmetry, while
            # chunks of 64 inputs and more keep the matrix products efficient.
            b = min(b, max(64, -(-n // 4)))
        if isinstance(runner, ConvStructuredMethod):
            # A convolution's per-example gradients cost the same in any chunking, and the panel keeps
            # them; quarter chunks skip 3/8 of the Gram products by symmetry (measured: 64 CNN inputs,
            # 64 channels, 28 x 28, full outputs, 20-30% faster with chunks of 16 than one of 64).
            b = min(b, max(16, -(-n // 4)))
        chosen = plan(n1, n2, feature, activation, total, pair=pair, batch_size=b)  # the panel gets the rest
    if budget is None and batch_size is not None:
        chosen = Plan(chosen.batch_size, default_panel, int(min(default_panel, n1 * feature)
                      + chosen.batch_size * (feature + activation) + chosen.batch_size ** 2 * pair),
                      default_panel + int(chosen.batch_size * (feature + activation)), feature, activation)
    return chosen


def _largest(fits: Any, n: int) -> int:
    """The largest b in [1, n] with fits(b) (fits is monotone decreasing in b); 1 if none."""
    lo, hi = 1, max(1, n)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo
