"""The same kernel call timed in several torchntk checkouts (this one and, say, the last release),
each in subprocesses of its own, alternating, so that drift in the machine's speed falls on all
of them alike.

    times = compare_checkouts("tn.mlp(4, 'relu', bias_std=0.1)", x, {"dtype": "float64"},
                              {"torchntk": ".", "release": "/path/to/release"}, repeats=3)

Each subprocess imports torchntk from its checkout (PYTHONPATH), builds the description from
the given expression, calls ``spec.kernels(x, **options)`` once to warm up and then ``repeats``
times, and reports every time and a corner of the NTK, so the versions' results can be
compared too. Only the public API is used, which both sides have.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

WORKER = r"""
import json, sys, time
import numpy as np, torch
import torchntk as tn
spec = eval(sys.argv[1], {"tn": tn, "torch": torch})
x = torch.from_numpy(np.load(sys.argv[2], allow_pickle=False))
options = json.loads(sys.argv[3])
options["dtype"] = getattr(torch, options.get("dtype", "float64"))
repeats = int(sys.argv[4])
out = spec.kernels(x, **options)
times = []
for _ in range(repeats):
    start = time.perf_counter()
    out = spec.kernels(x, **options)
    times.append(time.perf_counter() - start)
ntk = out[1]
np.save(sys.argv[5], (ntk[:64] if ntk.dim() == 1 else ntk[:64, :64]).double().numpy())
print(json.dumps({"times": times, "module": tn.__file__}))
"""


def compare_checkouts(spec_code: str, x: np.ndarray, options: dict, checkouts: dict[str, str], *,
                      repeats: int = 3, rounds: int = 2) -> dict[str, tuple[float, np.ndarray]]:
    """{name: (median time in s over rounds * repeats calls, a 64 x 64 corner of the NTK)} of
    ``spec.kernels(x, **options)`` in each checkout (name -> repository root)."""
    times: dict[str, list[float]] = {name: [] for name in checkouts}
    corners: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        xin = os.path.join(tmp, "x.npy")
        np.save(xin, x)
        order = list(checkouts)
        for round_ in range(rounds):
            for name in order if round_ % 2 == 0 else order[::-1]:
                root = str(Path(checkouts[name]).resolve())
                out = os.path.join(tmp, f"{name}.npy")
                env = {**os.environ, "PYTHONPATH": root}
                proc = subprocess.run([sys.executable, "-c", WORKER, spec_code, xin, json.dumps(options),
                                       str(repeats), out], capture_output=True, text=True, env=env, cwd=tmp)
                if proc.returncode != 0:
                    raise RuntimeError(f"{name} ({root}) failed: {proc.stderr.strip()[-2000:]}")
                report = json.loads(proc.stdout.strip().splitlines()[-1])
                if not report["module"].startswith(root):
                    raise RuntimeError(f"{name} imported torchntk from {report['module']}, not from {root}.")
                times[name] += report["times"]
                corners[name] = np.load(out, allow_pickle=False)
    return {name: (statistics.median(times[name]), corners[name]) for name in checkouts}
