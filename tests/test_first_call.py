"""The first kernel computed in a fresh process is as exact as any later one.

A kernel computed while the intra-op thread pool is still warming up must equal an independent
reference, to 1e-13 relative. Such a bug cannot be seen by any test that runs after another
kernel call in the same process, so each case here runs in fresh subprocesses with two
intra-op threads, several times, and compares the *first* kernel of each process against a
plain numpy recursion written from the formulas (no torchntk code).

Why 1e-13: the numpy reference and torchntk round differently (GEMM blocking, arccos
implementations), which costs a few 1e-16 per layer; the failure this guards against (a
self-correlation off by ~1e-12, amplified by arccos to sqrt(1e-12) ~ 1e-6) is 1e-7 or worse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

# Each process computes, as its very first torch work, one kernel per case below, and prints
# the results; the reference is computed in this (parent) process.
_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import torch
    torch.set_num_threads(2)
    import torchntk as tn
    case = json.loads(sys.argv[1])
    x = np.random.default_rng(case["seed"]).standard_normal((case["n"], case["d"]))
    act = tn.PiecewiseLinear(case["a"], case["b"])
    spec = tn.mlp(depth=case["depth"], activation=act, bias_std=case["bias_std"])
    nngp, ntk = spec.kernels(x, tile=case["tile"])
    np.save(sys.argv[2], np.stack([nngp, ntk]))
""")


def _reference(x: np.ndarray, depth: int, a: float, b: float, bias_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Sigma(L), Theta(L) of the paper's recursion for sigma(x) = a x (x > 0), b x (x < 0).

    E[s(u)s(v)] = (a-b)^2/2 sqrt(v1 v2) J1(rho) + a b cov and E[s'(u)s'(v)] = (a-b)^2/2 J0(rho) + a b,
    J0 = 1 - theta/pi, J1 = (sin theta + (pi - theta) cos theta)/pi, with each point's
    self-correlation set to exactly 1.
    """
    n0 = x.shape[1]
    var = np.einsum("ij,ij->i", x, x) / n0 + bias_std**2
    cov = x @ x.T / n0 + bias_std**2
    np.fill_diagonal(cov, var)
    ntk = cov.copy()
    half_jump, ab = (a - b) ** 2 / 2, a * b
    for _ in range(depth - 1):
        norm = np.sqrt(np.outer(var, var))
        rho = np.clip(cov / norm, -1.0, 1.0)
        np.fill_diagonal(rho, 1.0)
        theta = np.arccos(rho)
        j0 = 1 - theta / np.pi
        j1 = (np.sqrt(1 - rho**2) + (np.pi - theta) * rho) / np.pi
        cov = half_jump * norm * j1 + ab * cov + bias_std**2
        ntk = ntk * (half_jump * j0 + ab) + cov
        var = np.diag(cov).copy()
    return cov, ntk


# Every in-place piecewise-linear path (ReLU, leaky ReLU, abs, a general slope pair), in one
# tile and across several tiles (the first tile of a multi-tile matrix was the one affected).
CASES = [
    {"a": 1.0, "b": 0.0, "n": 300, "d": 64, "tile": 512},
    {"a": 1.0, "b": 0.01, "n": 300, "d": 64, "tile": 512},
    {"a": 1.0, "b": -1.0, "n": 300, "d": 64, "tile": 512},
    {"a": 0.7, "b": 0.2, "n": 300, "d": 64, "tile": 512},
    {"a": 1.0, "b": 0.0, "n": 700, "d": 64, "tile": 256},
]
RUNS = 2


def test_first_kernel_of_fresh_processes_matches_reference(tmp_path):
    # All processes start at once: besides being quicker, they then contend for the two
    # cores, which varies the thread pool's start-up timing from process to process.
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    jobs = []
    for index, case in enumerate(CASES):
        case = {**case, "seed": index, "depth": 4, "bias_std": 0.1}
        for run in range(RUNS):
            out = tmp_path / f"case{index}-run{run}.npy"
            child = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(case), str(out)], env=env)
            jobs.append((case, out, child))
    failures = []
    for case, out, child in jobs:
        assert child.wait(timeout=300) == 0, f"child process failed for {case}"
        x = np.random.default_rng(case["seed"]).standard_normal((case["n"], case["d"]))
        ref_nngp, ref_ntk = _reference(x, case["depth"], case["a"], case["b"], case["bias_std"])
        nngp, ntk = np.load(out, allow_pickle=False)
        errors = (np.abs(nngp - ref_nngp).max() / np.abs(ref_nngp).max(),
                  np.abs(ntk - ref_ntk).max() / np.abs(ref_ntk).max())
        if max(errors) >= 1e-13:
            failures.append((case, errors))
    assert not failures, f"first-call relative errors (nngp, ntk) above 1e-13: {failures}"


def test_reference_is_sensitive_to_a_broken_self_correlation():
    """Power check: the comparison above fails when one self-correlation is off by 1e-12."""
    x = np.random.default_rng(0).standard_normal((50, 16))
    nngp, ntk = _reference(x, 4, 1.0, 0.0, 0.1)
    # The same recursion with the first point's variance perturbed by 1e-12 (relative) in
    # the correlation of layer 2 only, as a racing in-place update would.
    n0 = x.shape[1]
    var = np.einsum("ij,ij->i", x, x) / n0 + 0.01
    cov = x @ x.T / n0 + 0.01
    np.fill_diagonal(cov, var)
    t = cov.copy()
    for layer in range(3):
        norm = np.sqrt(np.outer(var, var))
        if layer == 0:
            norm[0, 0] *= 1 + 1e-12
        rho = np.clip(cov / norm, -1.0, 1.0)
        theta = np.arccos(rho)
        j0, j1 = 1 - theta / np.pi, (np.sqrt(1 - rho**2) + (np.pi - theta) * rho) / np.pi
        cov = norm * j1 / 2 + 0.01
        t = t * j0 / 2 + cov
        var = np.diag(cov).copy()
    assert np.abs(t - ntk).max() / np.abs(ntk).max() > 1e-8
