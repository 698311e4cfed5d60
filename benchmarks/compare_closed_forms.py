"""torchntk's closed-form nonlinearities beside neural-tangents' stax versions, same inputs.

    .venv/bin/python benchmarks/compare_closed_forms.py [--nt-python /path/to/nt-venv/bin/python]

For each activation and depth 2 and 3 (one and two nonlinearities; Dense layers with W_std = 1,
b_std = 0.3), the NNGP and NTK of x against itself (6 points in R^4, one duplicated and one
antipodal pair) from both libraries: how many entries neural-tangents returns as NaN, and the
largest relative difference where it is finite. neural-tangents runs in its own virtual
environment (jax, numpy < 2) through a subprocess; it is skipped if that is missing.
Activations whose NTK torchntk refuses (Sign, the step) are compared on the NNGP only.

Measured (neural-tangents 0.6.5, float64): Monomial, Polynomial, Exp and Gaussian agree to
<= 2e-15 relative at both depths. RectifiedMonomial(k), k = 0..3: neural-tangents returns NaN on
the diagonal and at the duplicate pair (it divides by sin(theta) at rho = 1) and everywhere at
depth 3; its finite entries agree to 4e-16 except one diagonal entry where rounding leaves
rho = 1 - O(eps): there its NNGP is off by 7e-9 (k = 0) and its NTK by 8-19% (arccos and
1/sin(theta) amplify the rounding), while torchntk's equals its ReLU kernel exactly (k = 1). Sign:
neural-tangents' NNGP is off by 1e-4 on that same diagonal entry at depth 3 (torchntk's is exactly
1 + b^2 there) and it returns an NTK where torchntk raises.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
import torch

import torchntk as tn

# (torchntk object, neural-tangents constructor call): the same function in both.
ACTIVATIONS = [
    (tn.RectifiedMonomial(0), "stax.RectifiedMonomial(0)"), (tn.RectifiedMonomial(1), "stax.RectifiedMonomial(1)"),
    (tn.RectifiedMonomial(2), "stax.RectifiedMonomial(2)"), (tn.RectifiedMonomial(3), "stax.RectifiedMonomial(3)"),
    (tn.Monomial(3), "stax.Monomial(3)"), (tn.Polynomial([0.2, 1.0, -0.3]), "stax.Polynomial([0.2, 1.0, -0.3])"),
    (tn.Exp(0.5, 0.5), "stax.Exp(0.5, 0.5)"), (tn.Gaussian(), "stax.Gaussian()"),
    (tn.Gaussian(2.0, -0.3), "stax.Gaussian(2.0, -0.3)"), (tn.Sign(), "stax.Sign()"),
]
DEPTHS = (2, 3)
BIAS_STD = 0.3

NT_SCRIPT = """
import json, sys, types
sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from neural_tangents import stax
x = np.load(sys.argv[1])
out = {}
for call in json.loads(sys.argv[2]):
    for depth in json.loads(sys.argv[3]):
        layers = [stax.Dense(512, W_std=1.0, b_std=float(sys.argv[4]))]
        for i in range(depth - 1):
            width = 1 if i == depth - 2 else 512
            layers += [eval(call), stax.Dense(width, W_std=1.0, b_std=float(sys.argv[4]))]
        k = stax.serial(*layers)[2](x, None, ("nngp", "ntk"))
        out[f"{call}|{depth}"] = [np.asarray(k.nngp).tolist(), np.asarray(k.ntk).tolist()]
print(json.dumps(out))
"""


def inputs() -> np.ndarray:
    x = np.random.default_rng(1).standard_normal((6, 4))
    x[4], x[5] = x[1], -x[0]
    return x


def run_neural_tangents(python: str, x: np.ndarray) -> dict | None:
    if not os.path.exists(python):
        print(f"(neural-tangents venv not found at {python}: skipped)")
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "x.npy")
        np.save(path, x)
        calls = json.dumps([call for _, call in ACTIVATIONS])
        proc = subprocess.run([python, "-c", NT_SCRIPT, path, calls, json.dumps(DEPTHS), str(BIAS_STD)],
                              capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        print("neural-tangents failed:\n" + proc.stderr[-2000:])
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(ours: np.ndarray, theirs: np.ndarray) -> str:
    finite = np.isfinite(theirs)
    nans = int((~finite).sum())
    if not finite.any():
        return f"all {nans} NaN"
    diff = np.max(np.abs(ours[finite] - theirs[finite]) / np.abs(ours[finite]))
    return f"{nans:2d} NaN, max rel diff {diff:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nt-python", default=os.environ.get("NT_PYTHON", "nt-venv/bin/python"))
    args = parser.parse_args()
    x = inputs()
    theirs = run_neural_tangents(args.nt_python, x)
    print(f"{'activation':32s} depth  {'NNGP (neural-tangents vs torchntk)':36s} NTK")
    for act, call in ACTIVATIONS:
        for depth in DEPTHS:
            spec = tn.mlp(depth, act, bias_std=BIAS_STD)
            xt = torch.as_tensor(x)
            try:
                nngp, ntk = (k.numpy() for k in spec.kernels(xt))
            except ValueError:                                         # no NTK (Sign, step)
                nngp, ntk = spec.nngp(xt).numpy(), None
            assert np.isfinite(nngp).all() and (ntk is None or np.isfinite(ntk).all())
            if theirs is None:
                continue
            nt_nngp, nt_ntk = (np.asarray(k, dtype=float) for k in theirs[f"{call}|{depth}"])
            ntk_text = "torchntk: ValueError (no NTK)" if ntk is None else compare(ntk, nt_ntk)
            print(f"{act!r:32s} {depth:5d}  {compare(nngp, nt_nngp):36s} {ntk_text}")


if __name__ == "__main__":
    main()
