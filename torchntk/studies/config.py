"""Settings of the paper's experiments and of the width sweeps, in quick and full form.

The full settings are the paper's (Section 6); the quick ones shrink the widest networks and
shorten some runs so the whole `torchntk reproduce` fits in a few minutes on two CPU cores, and
the report says which was used. The width sweep of the appendix's statements is not in the
paper; its full form goes to width 4,096 with 10 seeds, its quick form to 1,024 with 6.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np


def derive_seed(seed: int, *keys: int | str) -> int:
    """A seed for one random thing of a run (a network, a data set), from the run's ``seed`` and
    labels (ints or strings); unrelated streams for different labels, the same for the same ones.

    Every label enters numpy's SeedSequence whole: a string as its length followed by its UTF-8
    bytes in 32-bit words, so "fig1-data" and "fig1-bootstrap" differ."""
    words = [int(seed)]
    for key in keys:
        if isinstance(key, str):
            raw = key.encode()
            words += [len(raw), *np.frombuffer(raw.ljust(-(-len(raw) // 4) * 4, b"\0"), dtype="<u4").tolist()]
        else:
            words.append(int(key))
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint32)[0])


@dataclass(frozen=True)
class NetworkSettings:
    r"""The architecture: depth (dense layers), activation name, :math:`\beta` (bias_std),
    :math:`\sigma_w` (weight_std)."""

    depth: int = 4
    activation: str = "relu"
    bias_std: float = 0.1
    weight_std: float = 1.0

    def spec(self):
        """The network description `mlp(depth, activation, bias_std, weight_std)` of these settings."""
        from ..engine.serial import mlp
        return mlp(self.depth, self.activation, bias_std=self.bias_std, weight_std=self.weight_std)

    def describe(self) -> str:
        """A short label for captions, e.g. "depth 4, relu, β = 0.1" (σ_w only when it is not 1)."""
        return (f"depth {self.depth}, {self.activation}, β = {self.bias_std:g}"
                + ("" if self.weight_std == 1 else f", σ_w = {self.weight_std:g}"))


@dataclass(frozen=True)
class Fig1Settings:
    r"""Figure 1: :math:`\Theta(x_0, x)` on the unit circle at init and after training on
    :math:`f^*(x) = x_1 x_2`.

    ``inits`` networks per width are drawn and trained (the paper's 10); the spread at
    initialization is measured over ``spread_inits`` >= inits draws (the extra ones untrained),
    which costs little and narrows the comparison of the two widths' spreads.
    """

    network: NetworkSettings = field(default_factory=NetworkSettings)
    widths: tuple[int, ...] = (500, 10_000)
    inits: int = 10
    spread_inits: int = 40
    steps: int = 200
    lr: float = 1.0
    train_points: int = 20
    grid: int = 121


@dataclass(frozen=True)
class Fig2Settings:
    """Figure 2: regression on 4 circle points vs the limit Gaussian at t = inf."""

    network: NetworkSettings = field(default_factory=NetworkSettings)
    widths: tuple[int, ...] = (50, 1_000)
    inits: int = 10
    steps: int = 1_000
    lr: float = 1.0
    angles: tuple[float, ...] = (-2.2, -1.0, 1.0, 2.2)
    targets: tuple[float, ...] = (-0.4, -0.2, 0.3, 0.3)
    grid: int = 181


@dataclass(frozen=True)
class Fig3Settings:
    r"""Figure 3: convergence along the 2nd kernel principal component on 512 digits.

    The learning rate is ``lr_factor`` :math:`/ \lambda_1` (gradient descent on the limit kernel
    needs :math:`\eta < 2 / \lambda_1`; at :math:`1 / \lambda_1` narrow ReLU networks showed loss
    spikes, at :math:`0.7 / \lambda_1` far fewer), and training runs until
    :math:`\lambda_2 t` = ``horizon``.
    """

    depths: tuple[int, ...] = (4, 5)
    activation: str = "relu"
    bias_std: float = 0.1
    widths: tuple[int, ...] = (100, 1_000, 10_000)
    trials: int = 2
    points: int = 512
    lr_factor: float = 0.7
    horizon: float = 4.0
    records: int = 60
    data: str = "mnist"


@dataclass(frozen=True)
class SweepSettings:
    """The appendix's statements over a width sweep (Proposition 1, Theorems 1 and 2, Lemma 1)."""

    network: NetworkSettings = field(default_factory=NetworkSettings)
    widths: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096)
    seeds: int = 10
    gaussian_seeds: int = 200
    out_features: int = 2
    data: str = "circle"
    points: int = 12
    data_dim: int = 2
    target_column: int | None = None
    lr: float = 1.0
    steps: int = 200
    record_every: int = 20
    confidence: float = 0.95


@dataclass(frozen=True)
class ReproduceSettings:
    """Everything `torchntk reproduce` runs."""

    mode: str
    fig1: Fig1Settings
    fig2: Fig2Settings
    fig3: Fig3Settings
    sweep: SweepSettings

    def as_dict(self) -> dict[str, Any]:
        """Every setting, nested figure settings included, as plain data (dataclasses.asdict)."""
        return asdict(self)


def full_settings() -> ReproduceSettings:
    """The paper's settings (widths up to 10,000): hours on a laptop CPU."""
    return ReproduceSettings("full", Fig1Settings(), Fig2Settings(), Fig3Settings(), SweepSettings())


def quick_settings() -> ReproduceSettings:
    """A few minutes on two CPU cores (3.3 and 5.7 minutes measured on a busy two-core machine): narrower
    widest networks, shorter runs where they change nothing visible, a smaller width sweep."""
    full = full_settings()
    return ReproduceSettings(
        "quick",
        replace(full.fig1, widths=(500, 2_000), spread_inits=30),
        # The limit's slowest mode on the 4 points decays as exp(-0.037 t): by t = 400 the trained
        # functions are those of t = inf to 1e-6, so the paper's 1,000 steps would change nothing visible.
        replace(full.fig2, steps=400),
        replace(full.fig3, widths=(100, 300, 1_000), horizon=2.5),
        # Weight norms are recorded by Lanczos SVDs (seconds at width 1024): record every 40 steps.
        replace(full.sweep, widths=(64, 128, 256, 512, 1024), seeds=6, gaussian_seeds=100, record_every=40),
    )


def smoke_settings() -> ReproduceSettings:
    """Seconds: tiny networks and few seeds, to check that everything runs and writes its report.
    Its numbers are too noisy to bear the theory out and the report says it is a smoke run."""
    full = full_settings()
    return ReproduceSettings(
        "smoke",
        replace(full.fig1, widths=(16, 64), inits=3, spread_inits=5, steps=5, train_points=5, grid=25),
        replace(full.fig2, widths=(16, 64), inits=3, steps=20, grid=31),
        replace(full.fig3, widths=(16, 32, 64), trials=1, points=32, horizon=0.5, records=4),
        replace(full.sweep, widths=(8, 16, 32), seeds=2, gaussian_seeds=4, steps=4, record_every=2, points=5),
    )
