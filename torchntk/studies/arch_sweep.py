"""Proposition 1 and Theorem 1 over a width sweep for any architecture (convolutions, pooling,
branches, LayerNorm), at initialisation: ``torchntk study --spec FILE.json``.

    sweep = measure_arch_sweep(spec, x, widths=(16, 32, 64, 128), seeds=4, seed=0)
    sweep.theorem1.verdict           # fitted log-log slope of ||Theta_emp - Theta|| vs width: -1/2?

For each width n (channels of every hidden Conv, units of every hidden Dense) and seed, a network
``spec.network(width=n, seed=...)`` is drawn in float64 and measured on the data x (N, C, ...):

- Theorem 1: ||Theta_emp - Theta(L) (x) Id_k||_op / N, the empirical NTK (`torchntk.empirical_ntk`)
  against the limit ``spec.ntk`` (the paper's normalisation, as in the fully-connected sweep);
- Proposition 1: ||Sigma~ - Sigma(L)||_op, where Sigma~ = weight_std^2 a a^T / n_a + bias_std^2 is
  the output covariance given the readout's input a (N, n_a) (the network minus its last Dense
  layer) and Sigma(L) = ``spec.nngp``. It needs the network to end with a Dense layer on
  vectors (a Flatten or GlobalAvgPool readout); otherwise it is not measured, and says so.

Both fall like n^-1/2 by the central limit theorem; the slope is fitted with its interval by
`torchntk.studies.rates.fit_loglog`, whose rules give the verdict. The paper's training
statements (Theorem 2, Lemma 1) and the Gaussianity tests are measured per dense layer of the
fully-connected network and are not part of this sweep.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._outputs import COMMENT, WRITER, check_replaceable
from .config import derive_seed
from .measures import conditional_nngp, ntk_distance, op_norm
from .rates import SlopeFit, fit_loglog

PREDICTED = -0.5


@dataclass(frozen=True)
class ArchSweep:
    """What an architecture sweep measured.

    Attributes:
        widths: (W,) the widths.
        ntk_init: (W, S) Theorem 1 distances.
        conditional: (W, S) Proposition 1 distances, or None when the readout is not a Dense
            layer on vectors.
        theorem1, proposition1: the slope fits (proposition1 None with ``conditional``).
        description: repr of the architecture.
        input_shape: the per-example shape (C, *positions).
    """

    widths: np.ndarray
    ntk_init: np.ndarray
    conditional: np.ndarray | None
    theorem1: SlopeFit
    proposition1: SlopeFit | None
    description: str
    input_shape: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        """The measurements and fits as plain JSON data (arrays as nested lists)."""
        return {"architecture": self.description, "input_shape": list(self.input_shape),
                "widths": self.widths.tolist(), "ntk_init": self.ntk_init.tolist(),
                "conditional_nngp": None if self.conditional is None else self.conditional.tolist(),
                "theorem1": self.theorem1.as_dict(),
                "proposition1": None if self.proposition1 is None else self.proposition1.as_dict()}


def _readout(net) -> torch.nn.Module | None:
    """The last module when it is a Dense layer (weight (k, n_a)) on vectors, else None."""
    last = list(net.body.children())[-1] if net.body is not None else None
    weight = getattr(last, "weight", None)
    if weight is None or weight.dim() != 2 or not hasattr(last, "weight_std") or not hasattr(last, "bias_std"):
        return None
    return last


def _readout_input(net, readout: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """a (N, n_a): what the readout layer receives when the network runs on x."""
    captured: list[torch.Tensor] = []
    handle = readout.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    try:
        with torch.no_grad():
            net(x)
    finally:
        handle.remove()
    return captured[0].reshape(x.shape[0], -1)


def measure_arch_sweep(spec, x: Any, widths: tuple[int, ...], seeds: int, seed: int,
                       out_features: int = 1, confidence: float = 0.95) -> ArchSweep:
    """Draw ``seeds`` networks per width and measure Theorem 1 and Proposition 1 at initialisation.

    Args:
        spec: an architecture description (`torchntk.serial(...)`).
        x: inputs of shape (N, C, *positions) (or (N, d) for vector architectures).
        widths: at least 3 distinct widths.
        seeds: networks per width (>= 2).
        seed: the seed every draw derives from (network (width, s) from seed, "arch-sweep", width, s).
        out_features: k, the outputs of each network.
        confidence: of the slope intervals.

    Returns:
        An `ArchSweep`.
    """
    from ..empirical import empirical_ntk

    if len(set(widths)) < 3 or seeds < 2:
        raise ValueError(f"a width sweep needs at least 3 distinct widths and 2 seeds to fit a slope with an "
                         f"uncertainty; got widths {tuple(widths)} and {seeds} seed(s).")
    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if x.dim() < 2 or x.shape[0] < 2:
        raise ValueError(f"the sweep needs at least 2 inputs of shape (N, C, ...); got shape {tuple(x.shape)}.")
    shape = tuple(int(n) for n in x.shape[1:])
    out = spec.analyse(shape)  # an ArchitectureError naming the layer before any network is drawn
    if out.shape != ():
        raise ValueError(f"the sweep compares (N, k) outputs with the scalar limit kernels; this network's output "
                         f"keeps positions {out.shape}: end it with a readout (Flatten() or GlobalAvgPool(), then "
                         "Dense()).")
    nngp, ntk = spec.kernels(x)
    w_count = len(widths)
    ntk_init = np.zeros((w_count, seeds))
    conditional: np.ndarray | None = np.zeros((w_count, seeds))
    for wi, width in enumerate(widths):
        for s in range(seeds):
            net = spec.network(width=int(width), out_features=out_features, seed=derive_seed(seed, "arch-sweep",
                               int(width), s), input_shape=shape, dtype=torch.float64)
            ntk_init[wi, s] = ntk_distance(empirical_ntk(net, x, outputs="full"), ntk)
            readout = _readout(net) if conditional is not None else None
            if readout is None:
                conditional = None
                continue
            sigma = conditional_nngp(_readout_input(net, readout, x), float(readout.weight_std),
                                     float(readout.bias_std))
            conditional[wi, s] = op_norm(sigma - nngp)
    w = np.asarray(widths, dtype=np.int64)
    theorem1 = fit_loglog(w, ntk_init, PREDICTED, confidence)
    proposition1 = None if conditional is None else fit_loglog(w, conditional, PREDICTED, confidence)
    return ArchSweep(w, ntk_init, conditional, theorem1, proposition1, repr(spec), shape)


ARCH_REPORT_FILES = ("results.json", "report.md")
"""What `write_arch_report` writes; checked before any work (`torchntk._outputs.check_replaceable`)."""


def write_arch_report(sweep: ArchSweep, out: Path, source: str) -> dict[str, Path]:
    """results.json and report.md for an architecture sweep in ``out``; returns their paths."""
    from .. import __version__

    check_replaceable(out, ARCH_REPORT_FILES)
    out.mkdir(parents=True, exist_ok=True)
    data = {"written_by": f"{WRITER} {__version__}", **sweep.as_dict(), "data": source}
    json_path, md_path = out / "results.json", out / "report.md"
    json_path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    lines = [COMMENT, "# Width sweep of an architecture at initialisation", "",
             f"Architecture: `{sweep.description}`, inputs of shape {sweep.input_shape}; data: {source}.", "",
             "| statement | measured slope | theory | criterion | verdict |", "|---|---|---|---|---|"]
    rows = [("Theorem 1: ‖Theta_emp - Theta‖ / N", sweep.theorem1)]
    if sweep.proposition1 is not None:
        rows.append(("Proposition 1: ‖Sigma~ - Sigma(L)‖ (given the readout's input)", sweep.proposition1))
    for name, fit in rows:
        lines.append(f"| {name} | {fit.describe()} | slope {fit.predicted:g} | {fit.criterion} | {fit.verdict} |")
    if sweep.proposition1 is None:
        lines += ["", "Proposition 1 was not measured: the network does not end with a Dense layer on vectors "
                      "(a Flatten or GlobalAvgPool readout), so the output covariance given the readout's input "
                      "has no closed form here."]
    lines += ["", "| width | " + " | ".join(name.split(":")[0] for name, _ in rows) + " (mean over seeds) |",
              "|---|" + "---|" * len(rows)]
    series = [sweep.ntk_init] + ([sweep.conditional] if sweep.conditional is not None else [])
    for wi, width in enumerate(sweep.widths.tolist()):
        lines.append(f"| {width} | " + " | ".join(f"{s[wi].mean():.4g}" for s in series) + " |")
    lines += ["", "Theorem 2, Lemma 1 and the Gaussianity tests (training and per-dense-layer statements) are "
                  "measured for fully-connected networks only (`torchntk study` without --spec)."]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"results": json_path, "report": md_path}
