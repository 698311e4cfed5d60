"""Theorem 1 at work: the empirical NTK of finite networks approaches the infinite-width NTK.

Inputs on the unit circle, x = (cos g, sin g); for each width, networks drawn with several seeds.
Left: Theta(x_0, x) along the circle for the narrowest and the widest networks, beside the limit
`spec.ntk`. Right: the relative error |Theta_n - Theta|_F / |Theta|_F against width on log-log
axes, with the fitted slope (the theory says -1/2: fluctuations of a sum of n independent terms).

    python docs/examples/width_sweep.py                 # widths 64 .. 2048, 6 seeds (a minute or two)
    python docs/examples/width_sweep.py --small         # seconds (what the tests run)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

import torchntk as tn
from torchntk.studies import fit_loglog


def run(small: bool, out: Path) -> dict:
    widths = (32, 64, 128) if small else (64, 128, 256, 512, 1024, 2048)
    seeds = 2 if small else 6
    points = 16 if small else 64
    spec = tn.mlp(depth=4, activation="relu", bias_std=0.1)
    gamma = torch.linspace(-math.pi, math.pi, points, dtype=torch.float64)
    x = torch.stack([gamma.cos(), gamma.sin()], dim=1)
    limit = spec.ntk(x)

    errors = np.empty((len(widths), seeds))
    rows = {}
    for i, width in enumerate(widths):
        for seed in range(seeds):
            net = spec.network(width=width, seed=seed, dtype=torch.float64)
            theta = tn.empirical_ntk(net, x, outputs="trace")
            errors[i, seed] = float((theta - limit).norm() / limit.norm())
            if seed == 0:
                rows[width] = theta[points // 2].numpy()
    fit = fit_loglog(np.array(widths, dtype=float), errors, predicted=-0.5)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    g = gamma.numpy()
    for width in (widths[0], widths[-1]):
        left.plot(g, rows[width], lw=1, label=f"width {width}")
    left.plot(g, limit[points // 2].numpy(), "k--", lw=1.5, label="infinite width")
    left.set(xlabel="angle of x", ylabel="Theta(x_0, x)", title="NTK along the circle (x_0 at angle 0)")
    left.legend()
    right.loglog(np.repeat(widths, seeds), errors.ravel(), "o", alpha=0.5, label="one network")
    right.loglog(widths, np.exp(fit.intercept) * np.array(widths, dtype=float) ** fit.slope, "k-",
                 label=f"fit: slope {fit.slope:.2f} +- {fit.stderr:.2f}")
    right.set(xlabel="width", ylabel="relative error", title="|Theta_n - Theta| / |Theta|")
    right.legend()
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "width_sweep.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"slope {fit.slope:.3f} +- {fit.stderr:.3f} (theory -1/2): {fit.verdict}; figure: {path}")
    return {"figure": path, "slope": fit.slope, "errors": errors}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures")
    args = parser.parse_args()
    run(args.small, args.out)
