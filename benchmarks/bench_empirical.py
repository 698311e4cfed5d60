"""Speed and memory of the empirical NTK methods, beside neural-tangents, on a dense and a
convolutional network.

    .venv/bin/python benchmarks/bench_empirical.py                  # both cases
    .venv/bin/python benchmarks/bench_empirical.py --cases cnn      # the CNN only
    .venv/bin/python benchmarks/bench_empirical.py --quick          # small, a few seconds

MLP case: 784 -> 3 x 2048 -> k (ReLU, bias_std 0.1, NTK parameterisation), N = 256 inputs
against themselves, float32, k = 1 and 10, outputs "trace" and "full". CNN case: nn.Sequential
of 3 x (nn.Conv2d 3x3, 64 channels, "same" padding, ReLU), global average pooling and a 10-way
nn.Linear (standard parameterisation, torch's default initialisation), on N = 64 inputs of shape
(1, 28, 28) against themselves, float32, k = 10, outputs "trace" and "full"; neural-tangents gets
the same network in stax (channels last, weights transposed). Each method runs
in a subprocess of its own (a warm-up call, then --repeats timed calls) so that its peak memory
is the growth of the process's max RSS over the setup (resource.getrusage). Neural-tangents
($NT_PYTHON; docs/benchmarks.md) gets the same weights and inputs and reports its largest difference from our
kernel too. Ratios are medians against our "jacobian" method in the same run ("> x" when that
timed out). The machine is shared: wall times vary run to run, so medians and minimums are both
shown, with the load average. On an oversubscribed machine OpenMP's spinning threads slow torch
down several-fold (a descheduled thread stalls every parallel op), so torch workers run with
OMP_WAIT_POLICY=PASSIVE unless --omp-active is given; neural-tangents (XLA) does not use OpenMP.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NT_PYTHON = Path(os.environ.get("NT_PYTHON", "nt-venv/bin/python"))
METHODS = ("structured", "jacobian", "ntk_vp")
CNN_METHODS = ("structured", "jacobian")
NT_IMPLEMENTATIONS = {"nt structured": 3, "nt jacobian": 1}
CNN_NT_IMPLEMENTATIONS = {"nt structured": 3}


def cnn(channels: int = 64, layers: int = 3, k: int = 10, seed: int = 0):
    """The CNN case: layers x (Conv2d 3x3 "same", ReLU), global average pooling, Linear(channels, k)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    body = []
    for index in range(layers):
        body += [nn.Conv2d(1 if index == 0 else channels, channels, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, k))


def worker(args: argparse.Namespace) -> None:
    """Time one method in this process; print a JSON line."""
    import numpy as np
    import torch

    import torchntk as tn
    from torchntk.empirical import empirical_ntk

    if args.case == "cnn":
        net = cnn(args.channels, args.depth, args.k)
        x = torch.randn(args.n, 1, args.side, args.side, generator=torch.Generator().manual_seed(1))
    else:
        spec = tn.mlp(args.depth, "relu", bias_std=0.1)
        net = spec.network(width=args.width, out_features=args.k, seed=0, in_features=args.n0)
        x = torch.randn(args.n, args.n0, generator=torch.Generator().manual_seed(1))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    kernel = empirical_ntk(net, x, method=args.method, outputs=args.outputs)
    times = [time.perf_counter() - start]
    repeats = args.repeats if times[0] < args.slow else 0  # a slow method is timed by its first call
    cpu = []
    for _ in range(repeats):
        start, cpu0 = time.perf_counter(), time.process_time()
        kernel = empirical_ntk(net, x, method=args.method, outputs=args.outputs)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu0)
    if repeats:
        times = times[1:]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"times": times, "cpu": cpu, "peak_mb": (rss - rss0) / 1024}
    if args.save:
        arrays = {"x": x.numpy(), "kernel": kernel.numpy(), "bias_std": np.array(0.1)}
        layers = net.dense if args.case == "mlp" else [m for m in net if hasattr(m, "weight")]
        for index, layer in enumerate(layers):
            kind = "C" if layer.weight.dim() == 4 else "W"  # conv weights: (C_out, C_in, 3, 3)
            arrays[f"{kind}{index}"] = layer.weight.detach().numpy()
            arrays[f"b{index}"] = layer.bias.detach().numpy()
        np.savez(args.save, **arrays)
    print(json.dumps(result))


def run(command: list[str], timeout: float, env: dict[str, str] | None = None) -> dict:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent,
                              env={**os.environ, "PYTHONPATH": str(HERE.parent), **(env or {})})
    except subprocess.TimeoutExpired:
        return {"error": f"> {timeout:.0f} s"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
        errors = [line for line in lines if "Error" in line.split(":")[0]]  # e.g. "MemoryError: ..."
        return {"error": (errors or lines)[-1][:160]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    parser.add_argument("--n", type=int, default=256, help="MLP inputs")
    parser.add_argument("--n0", type=int, default=784)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--depth", type=int, default=4, help="MLP dense layers")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 10], help="MLP outputs")
    parser.add_argument("--outputs", nargs="+", default=["trace", "full"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="MLP methods")
    parser.add_argument("--cnn-n", type=int, default=64, help="CNN inputs")
    parser.add_argument("--channels", type=int, default=64, help="CNN channels")
    parser.add_argument("--side", type=int, default=28, help="CNN image side")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--slow", type=float, default=5.0, help="a method whose first call takes longer is "
                        "timed by that call alone")
    parser.add_argument("--timeout", type=float, default=200.0, help="seconds per method and setting")
    parser.add_argument("--omp-active", action="store_true", help="keep OpenMP's default (spinning) wait policy")
    parser.add_argument("--no-nt", action="store_true", help="skip neural-tangents")
    parser.add_argument("--quick", action="store_true", help="N=64, width 256: a smoke run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--case", default="mlp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.k, args.outputs = args.k[0], args.outputs[0]
        return worker(args)
    if args.quick:
        args.n, args.width, args.repeats, args.cnn_n, args.channels, args.side = 64, 256, 3, 16, 16, 12
    use_nt = not args.no_nt and NT_PYTHON.exists()
    torch_env = {} if args.omp_active else {"OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.TemporaryDirectory() as tmp:
        if "mlp" in args.cases:
            run_mlp(args, use_nt, torch_env, Path(tmp))
        if "cnn" in args.cases:
            run_cnn(args, use_nt, torch_env, Path(tmp))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


def run_cnn(args: argparse.Namespace, use_nt: bool, torch_env: dict[str, str], tmp: Path) -> None:
    print(f"\nCNN 3 x (Conv2d 3x3 'same', {args.channels} channels, ReLU) -> GlobalAvgPool -> Dense 10, "
          f"N = {args.cnn_n} inputs (1, {args.side}, {args.side}) against themselves, float32; load average "
          f"{os.getloadavg()[0]:.1f}")
    _header()
    k = 10
    for outputs in args.outputs:
        rows: dict[str, dict] = {}
        data = tmp / f"cnn_{outputs}.npz"
        for method in CNN_METHODS:
            command = [sys.executable, __file__, "--worker", "--case", "cnn", "--method", method, "--n",
                       str(args.cnn_n), "--channels", str(args.channels), "--side", str(args.side), "--depth", "3",
                       "--k", str(k), "--outputs", outputs, "--repeats", str(args.repeats), "--slow", str(args.slow)]
            if method == "structured":
                command += ["--save", str(data)]
            rows[method] = run(command, args.timeout, torch_env)
        if use_nt and data.exists():
            for label, implementation in CNN_NT_IMPLEMENTATIONS.items():
                command = [str(NT_PYTHON), str(HERE / "_nt_empirical.py"), str(data), str(implementation), outputs,
                           str(args.repeats)]
                rows[label] = run(command, args.timeout)
        _print_rows(k, outputs, rows, args.timeout)


def _header() -> None:
    header = f"{'k':>3} {'outputs':>7} {'method':>14} {'median s':>9} {'min s':>8} {'cpu s':>7} " \
             f"{'vs jacobian':>11} {'peak MB':>8}  note"
    print(header)
    print("-" * len(header))


def run_mlp(args: argparse.Namespace, use_nt: bool, torch_env: dict[str, str], tmp: Path) -> None:
    print(f"MLP {args.n0} -> {args.depth - 1} x {args.width} -> k (ReLU), N = {args.n} against itself, float32; "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}; torch env {torch_env or 'default'}")
    _header()
    for k in args.k:
        for outputs in args.outputs:
            rows: dict[str, dict] = {}
            data = tmp / f"net_{k}_{outputs}.npz"
            for method in args.methods:
                command = [sys.executable, __file__, "--worker", "--method", method, "--n", str(args.n),
                           "--n0", str(args.n0), "--width", str(args.width), "--depth", str(args.depth),
                           "--k", str(k), "--outputs", outputs, "--repeats", str(args.repeats),
                           "--slow", str(args.slow)]
                if method == "structured":
                    command += ["--save", str(data)]
                rows[method] = run(command, args.timeout, torch_env)
            if use_nt and data.exists():
                for label, implementation in NT_IMPLEMENTATIONS.items():
                    command = [str(NT_PYTHON), str(HERE / "_nt_empirical.py"), str(data), str(implementation),
                               outputs, str(args.repeats)]
                    rows[label] = run(command, args.timeout)
            _print_rows(k, outputs, rows, args.timeout)


def _print_rows(k: int, outputs: str, rows: dict[str, dict], timeout: float) -> None:
    base = rows.get("jacobian", {}).get("times")
    base_median = statistics.median(base) if base else None
    bound = "error" in rows.get("jacobian", {"error": ""}) and rows.get("jacobian", {}).get("error", "").startswith(">")
    for label, row in rows.items():
        if "error" in row:
            print(f"{k:>3} {outputs:>7} {label:>14} {'-':>9} {'-':>8} {'-':>7} {'-':>11} {'-':>8}  {row['error']}")
            continue
        median, best = statistics.median(row["times"]), min(row["times"])
        cpu = f"{statistics.median(row['cpu']):7.3f}" if row.get("cpu") else f"{'-':>7}"
        ratio = f"{base_median / median:10.1f}x" if base_median else \
            f"{'> ' + format(timeout / median, '.0f') + 'x':>11}" if bound else f"{'-':>11}"
        notes = []
        if len(row["times"]) == 1:
            notes.append("one call")
        if "max_rel_diff" in row:
            notes.append(f"max |NT - ours| / max|ours| = {row['max_rel_diff']:.1e}")
        if "first" in row:
            notes.append(f"first call (jit) {row['first']:.1f} s")
        print(f"{k:>3} {outputs:>7} {label:>14} {median:9.3f} {best:8.3f} {cpu} {ratio} {row['peak_mb']:8.0f}  "
              + "; ".join(notes))


if __name__ == "__main__":
    main()
