r"""Full-batch gradient descent on finite networks, recording what the paper's theorems speak about.

::

    run = train(net, x_train, y_train, lr=1.0, steps=1000, x_test=x_test, record_every=10)
    run.t, run.outputs_train, run.ntk, run.weight_change, run.activation_change

The default cost is the paper's :math:`C = \frac{1}{2N} \sum_i \lVert f(x_i) - y_i \rVert^2`, so
lr * steps is the time :math:`t` of `torchntk.dynamics` (docs/conventions.md): a wide network's outputs follow
`GradientFlow.predict_steps(steps, lr, f0_train=..., f0_test=...)` with the limiting NTK.
Recorded quantities (each only when asked, at steps 0, record_every, 2 record_every, ... and the last):

- "outputs": :math:`f(x)` on the training (and test) points;
- "ntk": the empirical NTK on the training points (`torchntk.empirical.empirical_ntk`), the
  quantity of Theorems 1 and 2 (it should barely move when the network is wide);
- "weights": per dense layer :math:`\lVert W^{(l)}(t) - W^{(l)}(0) \rVert_\text{op} / \sqrt{n_l}`,
  :math:`n_l` the layer's fan-in and :math:`W^{(l)}` its :math:`\mathcal N(0, 1)` weight matrix
  (Lemma 1: it vanishes at rate :math:`1/\sqrt{\text{width}}` for :math:`l \ge 1`; the input
  layer :math:`W^{(0)}`, whose fan-in :math:`n_0` is the data's dimension, is not covered and its
  change stays :math:`O(1)`);
- "activations": per hidden layer
  :math:`\lVert a^{(l)}(t) - a^{(l)}(0) \rVert_F / \lVert a^{(l)}(0) \rVert_F` over the training
  points.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .dynamics.losses import Loss, check_targets, get_loss, prepare_targets

RECORDABLE = ("outputs", "ntk", "weights", "activations")
_EXACT_NORM_SIZE = 256
"""Up to this smaller side the operator norm is a full SVD; above it an iterative method that
reads the matrix a few times (a full SVD of a 2048 x 2048 matrix takes ~10 s on 2 cores)."""


@dataclass
class TrainingRun:
    r"""The record of one training run, as numpy arrays over the R recorded steps.

    Attributes:
        steps: (R,) recorded step numbers (0 and the last included).
        t: (R,) the paper's time lr * steps.
        loss: (R,) the cost at those steps.
        outputs_train: (R, N, k) outputs on the training points, or None.
        outputs_test: (R, M, k) outputs on the test points, or None.
        ntk: empirical NTK on the training points, (R, N, N, k, k) (ntk_outputs="full") or
            (R, N, N) ("trace": the mean over the k diagonal output pairs), or None.
        weight_change: (R, L)
            :math:`\lVert W^{(l)}(t) - W^{(l)}(0) \rVert_\text{op} / \sqrt{n_l}` per layer, or None.
        weight_names: the L layers' names (parameter names for a generic module).
        activation_change: (R, L - 1)
            :math:`\lVert a^{(l)}(t) - a^{(l)}(0) \rVert_F / \lVert a^{(l)}(0) \rVert_F`, or None.
        preactivation_change: (R, L - 1) the same for the pre-activations :math:`\tilde a^{(l)}`
            (what Lemma 1's proof bounds), or None.
        lr: the learning rate.
    """

    steps: np.ndarray
    t: np.ndarray
    loss: np.ndarray
    outputs_train: np.ndarray | None
    outputs_test: np.ndarray | None
    ntk: np.ndarray | None
    weight_change: np.ndarray | None
    weight_names: tuple[str, ...]
    activation_change: np.ndarray | None
    lr: float
    preactivation_change: np.ndarray | None = None


def train(model: nn.Module, x_train: Any, y_train: Any, *, lr: float = 1.0, steps: int = 1000, x_test: Any = None,
          loss: str | Loss = "mse", record_every: int = 10, record: Sequence[str] | None = None,
          ntk_outputs: str = "full", seed: int | None = None) -> TrainingRun:
    r"""Train ``model`` in place by full-batch gradient descent:
    :math:`\theta \leftarrow \theta - \eta\, \partial C / \partial \theta` (:math:`\eta` = ``lr``).

    Args:
        model: any nn.Module mapping (N, d) to (N, k); all parameters with requires_grad are
            trained (freeze layers to train only some, e.g. the readout for the NNGP limit).
        x_train: (N, d) inputs (tensor or numpy; converted to the model's dtype and device).
        y_train: targets: (N,) or (N, k) for "mse"; integer classes (N,) or probabilities (N, k)
            for "cross_entropy"; anything a callable cost accepts.
        lr: learning rate :math:`\eta`; after :math:`s` steps the time is :math:`t = \eta s`. For
            "mse", gradient descent with a fixed kernel converges iff
            :math:`\eta < 2N / \lambda_{\max}(\Theta(X, X))` (`torchntk.dynamics.max_learning_rate`).
        steps: number of updates.
        x_test: (M, d) points on which to record outputs as well.
        loss: "mse" (:math:`C = \frac{1}{2N} \sum_i \lVert f(x_i) - y_i \rVert^2`), "cross_entropy"
            (mean over points), or a callable (outputs (N, k), targets) -> scalar, a mean over the
            points.
        record_every: record every this many steps (the last step is always recorded).
        record: any of "outputs", "ntk", "weights", "activations" (the NTK is the expensive one);
            None records all four (activations only for models that expose them).
        ntk_outputs: "full" or "trace" for the recorded NTK (see `empirical_ntk`).
        seed: seeds torch's random stream inside the run (forked, so the caller's is untouched)
            for models whose forward is random; gradient descent itself is deterministic.

    Returns:
        A `TrainingRun`.
    """
    steps = _count(steps, "steps", minimum=0)
    record_every = _count(record_every, "record_every", minimum=1)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0; got {lr!r}.")
    wanted = _check_record(RECORDABLE if record is None else record, ntk_outputs)
    if getattr(model, "body", True) is None and hasattr(model, "build"):   # a network built at its first forward
        model.build(tuple(np.shape(x_train)[1:]))
    first = next((p for p in model.parameters() if p.requires_grad), None)
    if first is None:
        raise ValueError("the model has no trainable parameters (requires_grad=True); nothing to train.")
    dtype, device = first.dtype, first.device
    x = _as_inputs(x_train, "x_train", dtype, device)
    xs = None if x_test is None else _as_inputs(x_test, "x_test", dtype, device)
    cost = get_loss(loss)
    y = prepare_targets(loss, y_train, x.shape[0], dtype, device)
    hidden = "activations" in wanted and _has_hidden(model)
    if "activations" in wanted and not hidden and record is not None:
        warnings.warn(f"{type(model).__name__} does not expose hidden activations (it needs `.dense` and "
                      "forward(x, return_hidden=True), as torchntk networks have); activations are not recorded.",
                      stacklevel=2)
    marks = set(range(0, steps + 1, record_every)) | {steps}
    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=seed is not None)
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            model(x)  # draws lazily-sized layers before their weights are recorded
        params = [p for p in model.parameters() if p.requires_grad]
        recorder = _Recorder(model, wanted, ntk_outputs, x, xs, hidden)
        for step in range(steps + 1):
            out = model(x, return_hidden=True) if hidden else model(x)
            f, activations = out if hidden else (out, None)
            if step == 0:
                _check_outputs(f, x.shape[0])
                check_targets(loss, y, f.shape[1])
            value = cost(f, y)
            if value.dim() != 0:
                raise ValueError(f"the cost must return a scalar (a mean over points); got shape {tuple(value.shape)}.")
            if not bool(torch.isfinite(value)):
                raise ValueError(f"training diverged at step {step} (cost {float(value.detach())}); lower lr, e.g. "
                                 "below 2 N / lambda_max of the NTK on the training points "
                                 "(torchntk.dynamics.max_learning_rate).")
            if step in marks:
                recorder.record(step, float(value.detach()), f, activations)
            if step < steps:
                grads = torch.autograd.grad(value, params, allow_unused=True)
                with torch.no_grad():
                    for param, grad in zip(params, grads, strict=True):
                        if grad is not None:  # a trainable parameter the outputs do not use
                            param.add_(grad, alpha=-lr)
    return recorder.result(lr)


def _relative_changes(now: list[Tensor], start: list[Tensor]) -> list[float]:
    """||a(t) - a(0)||_F / ||a(0)||_F per layer."""
    return [float((a - a0).norm() / a0.norm().clamp_min(torch.finfo(a0.dtype).tiny))
            for a, a0 in zip(now, start, strict=True)]


class _Recorder:
    """Collects the asked quantities at the recorded steps, relative to the values at step 0."""

    def __init__(self, model, wanted, ntk_outputs, x, xs, hidden) -> None:
        self.model, self.wanted, self.ntk_outputs, self.x, self.xs = model, wanted, ntk_outputs, x, xs
        self.hidden = hidden
        self.layers = _weight_layers(model) if "weights" in wanted else []
        self.start_weights = [w.detach().clone() for _, w, _ in self.layers]
        self.vectors: list[Tensor | None] = [None] * len(self.layers)
        self.start_activations: list[Tensor] | None = None
        self.start_pre: list[Tensor] | None = None
        self.rows: dict[str, list] = {name: [] for name in ("steps", "loss", "train", "test", "ntk", "w", "a", "pre")}

    def record(self, step: int, value: float, f: Tensor, activations: dict | None) -> None:
        rows = self.rows
        rows["steps"].append(step)
        rows["loss"].append(value)
        if "outputs" in self.wanted:
            rows["train"].append(_numpy(f))
            if self.xs is not None:
                with torch.no_grad():
                    rows["test"].append(_numpy(self.model(self.xs)))
        if "ntk" in self.wanted:
            from .empirical import empirical_ntk

            rows["ntk"].append(_numpy(empirical_ntk(self.model, self.x, outputs=self.ntk_outputs)))
        if self.layers:
            rows["w"].append([self._weight_change(i, step) for i in range(len(self.layers))])
        if activations is not None:
            acts = [a.detach() for a in activations["activations"]]
            if self.start_activations is None:
                self.start_activations = [a.clone() for a in acts]
            rows["a"].append(_relative_changes(acts, self.start_activations))
            if "preactivations" in activations:
                pre = [a.detach() for a in activations["preactivations"]]
                if self.start_pre is None:
                    self.start_pre = [a.clone() for a in pre]
                rows["pre"].append(_relative_changes(pre, self.start_pre))

    def _weight_change(self, i: int, step: int) -> float:
        _, weight, scale = self.layers[i]
        if step == 0:
            return 0.0
        norm, self.vectors[i] = operator_norm(weight.detach() - self.start_weights[i], self.vectors[i])
        return norm * scale

    def result(self, lr: float) -> TrainingRun:
        rows = self.rows
        stack = lambda key: np.stack(rows[key]) if rows[key] else None  # noqa: E731
        steps = np.asarray(rows["steps"], dtype=np.int64)
        return TrainingRun(steps=steps, t=lr * steps.astype(np.float64), loss=np.asarray(rows["loss"]),
                           outputs_train=stack("train"), outputs_test=stack("test"), ntk=stack("ntk"),
                           weight_change=np.asarray(rows["w"]) if self.layers else None,
                           weight_names=tuple(name for name, _, _ in self.layers),
                           activation_change=np.asarray(rows["a"]) if rows["a"] else None, lr=lr,
                           preactivation_change=np.asarray(rows["pre"]) if rows["pre"] else None)


def operator_norm(m: Tensor, start: Tensor | None = None, max_iter: int = 60) -> tuple[float, Tensor | None]:
    r""":math:`\lVert m \rVert_\text{op}`, the largest singular value, and a block of vectors to
    warm-start the next call.

    Small matrices: a full SVD. Large ones: subspace iteration on :math:`m^\top m` with a block of 8
    vectors and Rayleigh-Ritz (the top singular value of :math:`m Q`, which rises to
    :math:`\lVert m \rVert_\text{op}`), in m's dtype and on its device; :math:`W(t) - W(0)` turns
    slowly, so the previous record's block converges in a few passes. It stops when the estimated
    remaining error (the last change times :math:`\max(1, r / (1 - r))`, :math:`r` the larger of
    the last two ratios of successive changes) is below 10 eps of the dtype, relative (1e-12 at
    least); a spectrum too clustered to converge in ``max_iter`` passes falls back to Lanczos
    (scipy's ARPACK svds, exact to rounding).

    Args:
        m: the matrix, shape (p, q).
        start: the block returned by the previous call on a nearby matrix, or None.
        max_iter: the most subspace-iteration passes before falling back to Lanczos.

    Returns:
        The norm (a float) and the block for the next call (None where a full SVD was used).
    """
    if min(m.shape) <= _EXACT_NORM_SIZE:
        return float(torch.linalg.matrix_norm(m.to(torch.float64), ord=2)), None
    block = 8
    rtol = max(1e-12, 10 * torch.finfo(m.dtype).eps)
    if start is None or tuple(start.shape) != (m.shape[1], block):
        generator = torch.Generator().manual_seed(0)
        start = torch.randn(m.shape[1], block, generator=generator, dtype=torch.float64).to(m)
    q = torch.linalg.qr(start).Q
    values: list[float] = []
    for _ in range(max_iter):
        y = m @ q
        values.append(float(torch.linalg.svdvals(y)[0]))
        if len(values) >= 4:  # three successive changes give two estimates of the rate
            changes = [abs(b - a) for a, b in zip(values[-4:-1], values[-3:], strict=True)]
            rates = [b / a if a > 0 else 0.0 for a, b in zip(changes, changes[1:], strict=False)]
            rate = min(max(rates), 0.999)
            if changes[-1] * max(1.0, rate / (1 - rate)) <= rtol * values[-1]:
                return values[-1], q
        q = torch.linalg.qr(m.T @ y).Q
    return _lanczos_norm(m), q


def _lanczos_norm(m: Tensor) -> float:
    from scipy.sparse.linalg import svds

    return float(svds(m.detach().to("cpu", torch.float64).numpy(), k=1, tol=0, random_state=0,
                      return_singular_vectors=False)[0])


def _weight_layers(model: nn.Module) -> list[tuple[str, Tensor, float]]:
    """(name, weight, factor) with ||Delta W||_op * factor = the paper's ||Delta W(l)||_op / sqrt(n_l)."""
    dense = getattr(model, "dense", None)
    if dense is not None:
        layers = []
        for index, layer in enumerate(dense):
            fan_in = layer.weight.shape[1]
            # The paper's W(l) is the N(0, 1) matrix multiplied by weight_std / sqrt(n_l): in the
            # standard parameterisation the stored weight already carries that factor.
            std = float(getattr(layer, "weight_std", 1.0))
            standard = getattr(layer, "parameterization", "ntk") == "standard" and std > 0
            layers.append((f"dense.{index}", layer.weight, 1 / std if standard else 1 / math.sqrt(fan_in)))
        return layers
    return [(name, p, 1 / math.sqrt(p.shape[1])) for name, p in model.named_parameters()
            if p.requires_grad and p.dim() == 2]


def _has_hidden(model: nn.Module) -> bool:
    return hasattr(model, "dense") and len(model.dense) > 0 and hasattr(model, "activations")


def _check_record(record: Any, ntk_outputs: str) -> set[str]:
    if isinstance(record, str):
        record = (record,)
    wanted = set(record)
    unknown = wanted - set(RECORDABLE)
    if unknown:
        raise ValueError(f"record may hold {RECORDABLE}; got unknown {sorted(unknown)}.")
    if ntk_outputs not in ("full", "trace"):
        raise ValueError(f"ntk_outputs must be 'full' or 'trace'; got {ntk_outputs!r}.")
    return wanted


def _as_inputs(x: Any, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    from ._inputs import as_batch as as_features

    if isinstance(x, Tensor) and x.device != device:
        raise ValueError(f"{name} is on {x.device} but the model is on {device}; move it with {name}.to('{device}').")
    return as_features(x, name, dtype).to(device).detach()


def _check_outputs(f: Any, n: int) -> None:
    if not isinstance(f, Tensor) or f.dim() != 2 or f.shape[0] != n:
        shape = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
        raise ValueError(f"the model must map (N, d) inputs to (N, k) outputs; on N = {n} points it returned {shape}.")


def _count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
