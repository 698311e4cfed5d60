"""An infinitely wide network trained on handwritten digits, at every training time at once.

scikit-learn's 8x8 digits, flattened to 64 features in [0, 1], centred one-hot targets. The NTK
and NNGP of a depth-3 ReLU network are computed once; `tn.GradientFlow` then gives the mean
prediction of the trained network (over random initialisations) at any time t of gradient flow,
from one eigendecomposition. Left: test accuracy against t (t = lr * steps, the conventions'
time), for the NTK (every layer trained) and the NNGP (readout only). Right: the NTK on the test
points as a correlation, sorted by digit: its block structure is what the classifier sees.

    python docs/examples/digits_kernel.py             # 1,000 training / 797 test digits
    python docs/examples/digits_kernel.py --small     # seconds (what the tests run)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

import torchntk as tn


def run(small: bool, out: Path) -> dict:
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    n_train, n_test = (150, 100) if small else (1000, 797)
    train, test = order[:n_train], order[n_train:n_train + n_test]
    x = torch.from_numpy(digits.data / 16.0)
    labels = torch.from_numpy(digits.target)
    y = torch.nn.functional.one_hot(labels, 10).double() - 0.1   # centred one-hot

    spec = tn.mlp(depth=3, activation="relu", bias_std=0.1)
    nngp_all, ntk_all = spec.kernels(x[np.concatenate([train, test])])
    tr, te = slice(0, n_train), slice(n_train, n_train + n_test)
    times = np.logspace(-1, 4, 30 if small else 60)
    accuracy = {}
    for kind, kernel in (("NTK", ntk_all), ("NNGP", nngp_all)):
        flow = tn.GradientFlow(kernel[tr, tr], y[train], ridge=1e-6)
        mean = flow.predict(torch.from_numpy(times), ntk_test_train=kernel[te, tr], cov=None).mean
        accuracy[kind] = (mean.argmax(-1) == labels[test]).double().mean(-1).numpy()
        final = flow.predict(float("inf"), ntk_test_train=kernel[te, tr], cov=None).mean[0]
        accuracy[kind + " t=inf"] = float((final.argmax(-1) == labels[test]).double().mean())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for kind in ("NTK", "NNGP"):
        left.semilogx(times, accuracy[kind], label=f"{kind} (t = inf: {accuracy[kind + ' t=inf']:.3f})")
    left.set(xlabel="training time t", ylabel="test accuracy", title=f"{n_train} training digits")
    left.legend()
    sort = np.argsort(digits.target[test], kind="stable")
    k_test = ntk_all[te, te]
    scale = k_test.diagonal().sqrt()
    correlation = (k_test / scale[:, None] / scale[None, :]).numpy()[np.ix_(sort, sort)]
    right.imshow(correlation, cmap="viridis")
    right.set(title="NTK correlation on the test digits, sorted by class", xticks=[], yticks=[])
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "digits_kernel.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"test accuracy at t = inf: NTK {accuracy['NTK t=inf']:.3f}, NNGP {accuracy['NNGP t=inf']:.3f}; "
          f"figure: {path}")
    return {"figure": path, "accuracy": accuracy}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures")
    args = parser.parse_args()
    run(args.small, args.out)
