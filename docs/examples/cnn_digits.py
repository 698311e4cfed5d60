"""Convolutional kernels on handwritten digits, beside the fully-connected NTK.

scikit-learn's 8x8 digits as images of shape (N, 1, 8, 8) (PyTorch's layout). Three infinitely
wide networks, each trained to convergence (t = inf) on centred one-hot targets with a small
ridge: a fully-connected depth-3 ReLU network on the 64 pixels, and a 3-layer ReLU CNN (3x3
filters, "same" padding) read out by Flatten (each position's covariance only) or by
GlobalAvgPool (covariances between positions: translation-averaged features). The figure shows
test accuracy against the number of training digits (200 test digits).

This example needs the convolutional layers (tn.Conv, tn.Flatten, tn.GlobalAvgPool).

    python docs/examples/cnn_digits.py                # up to 200 training digits (minutes)
    python docs/examples/cnn_digits.py --small        # seconds (what the tests run)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

import torchntk as tn


def networks() -> dict:
    def cnn(readout):
        return tn.serial(tn.Conv((3, 3), padding="same", bias_std=0.1), tn.ReLU(),
                         tn.Conv((3, 3), padding="same", bias_std=0.1), tn.ReLU(),
                         tn.Conv((3, 3), padding="same", bias_std=0.1), tn.ReLU(),
                         readout, tn.Dense(bias_std=0.1))

    return {"fully connected": tn.mlp(depth=3, activation="relu", bias_std=0.1),
            "CNN + Flatten": cnn(tn.Flatten()),
            "CNN + GlobalAvgPool": cnn(tn.GlobalAvgPool())}


def run(small: bool, out: Path) -> dict:
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    sizes = (20, 40) if small else (25, 50, 100, 200)
    n_test = 30 if small else 200
    chosen = np.concatenate([order[:sizes[-1]], order[-n_test:]])     # training digits first, then test
    images = torch.from_numpy(digits.images[chosen] / 16.0)[:, None]  # (N, 1, 8, 8)
    labels = torch.from_numpy(digits.target[chosen])
    y = torch.nn.functional.one_hot(labels, 10).double() - 0.1
    test = slice(sizes[-1], None)

    accuracy = {name: [] for name in networks()}
    for name, spec in networks().items():
        x = images.flatten(1) if name == "fully connected" else images
        ntk = spec.ntk(x)                                               # once; every training size is a slice
        print(f"{name}: kernel of {len(x)} digits done", flush=True)
        for n in sizes:
            k_train = ntk[:n, :n]
            flow = tn.GradientFlow(k_train, y[:n], ridge=1e-4 * float(k_train.diagonal().mean()))
            mean = flow.predict(float("inf"), ntk_test_train=ntk[test, :n], cov=None).mean[0]
            accuracy[name].append(float((mean.argmax(-1) == labels[test]).double().mean()))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in accuracy.items():
        ax.plot(sizes, values, "o-", label=name)
    ax.set(xscale="log", xlabel="training digits", ylabel="test accuracy",
           title=f"NTK regression at t = inf, {n_test} test digits")
    ax.legend()
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cnn_digits.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    for name, values in accuracy.items():
        print(f"{name}: " + ", ".join(f"{n}: {a:.3f}" for n, a in zip(sizes, values, strict=True)))
    print(f"figure: {path}")
    return {"figure": path, "accuracy": accuracy}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures")
    args = parser.parse_args()
    run(args.small, args.out)
