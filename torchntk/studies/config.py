"""Settings of the paper's experiments and of the width sweeps, in quick and full form.

The full settings are the paper's (Section 6); the quick ones shrink the widest networks and
the seeds so the whole `torchntk reproduce` fits in about five minutes on two CPU cores, and
the report says which was used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np


def derive_seed(seed: int, *keys: int | str) -> int:
    """A seed for one random thing of a run (a network, a data set), from the run's ``seed`` and
    labels; unrelated streams for different labels, the same for the same ones."""
    words = [int(seed)] + [k if isinstance(k, int) else int.from_bytes(k.encode(), "little") % (2**32)
                           for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint32)[0])


@dataclass(frozen=True)
class NetworkSettings:
    """The architecture: depth (dense layers), activation name, beta (bias_std), sigma_w."""

    depth: int = 4
    activation: str = "relu"
    bias_std: float = 0.1
    weight_std: float = 1.0

    def spec(self):
        from ..spec import mlp
        return mlp(self.depth, self.activation, bias_std=self.bias_std, weight_std=self.weight_std)

    def describe(self) -> str:
        return (f"depth {self.depth}, {self.activation}, β = {self.bias_std:g}"
                + ("" if self.weight_std == 1 else f", σ_w = {self.weight_std:g}"))


@dataclass(frozen=True)
class Fig1Settings:
    """Figure 1: Theta(x0, x) on the unit circle at init and after training on f* = x1 x2."""

    network: NetworkSettings = field(default_factory=NetworkSettings)
    widths: tuple[int, ...] = (500, 10_000)
    inits: int = 10
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
    """Figure 3: convergence along the 2nd kernel principal component on 512 digits.

    The learning rate is ``lr_factor / lambda_1`` (stable: gradient descent on the limit kernel
    needs lr < 2 / lambda_1), and training runs until lambda_2 t = ``horizon``.
    """

    depths: tuple[int, ...] = (4, 5)
    activation: str = "relu"
    bias_std: float = 0.1
    widths: tuple[int, ...] = (100, 1_000, 10_000)
    trials: int = 2
    points: int = 512
    lr_factor: float = 1.0
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
    record_every: int = 10
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
        return asdict(self)


def full_settings() -> ReproduceSettings:
    """The paper's settings (widths up to 10,000): hours on a laptop CPU."""
    return ReproduceSettings("full", Fig1Settings(), Fig2Settings(), Fig3Settings(), SweepSettings())


def quick_settings() -> ReproduceSettings:
    """About five minutes on two CPU cores: narrower top widths, fewer seeds."""
    full = full_settings()
    return ReproduceSettings(
        "quick",
        replace(full.fig1, widths=(500, 2_000)),
        full.fig2,
        replace(full.fig3, widths=(100, 300, 1_000), trials=2),
        replace(full.sweep, widths=(64, 128, 256, 512, 1024), seeds=6, gaussian_seeds=100),
    )
