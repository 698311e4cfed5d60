"""Speed and memory of the empirical NTK methods, beside neural-tangents, on a dense and a
convolutional network.

    .venv/bin/python benchmarks/bench_empirical.py                  # both cases
    .venv/bin/python benchmarks/bench_empirical.py --cases cnn      # the CNN only
    .venv/bin/python benchmarks/bench_empirical.py --quick          # small, a few seconds
    .venv/bin/python benchmarks/bench_empirical.py --cases resnet transformer resmlp --no-nt   # any module

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

Any-module cases (``--cases resnet transformer``), float32, k = 10, N = --any-n inputs against
themselves, outputs "trace" and "full": a small ResNet written here (a 3x3 stem, one BasicBlock per
stage at 16, 32 and 64 channels with strides 1, 2, 2, eval BatchNorm, ReLU(inplace=True), global
average pooling, Linear(64, 10); 3 x 32 x 32 inputs) and a transformer encoder (2 x
nn.TransformerEncoderLayer, d_model 64, 4 heads, feed-forward 128, batch_first, eval; 16 tokens;
mean over tokens, Linear(64, 10)); ``--cases resmlp``: a residual MLP (Linear(128, 128), 3 pre-norm
blocks x + Linear(GELU(Linear(LayerNorm(x)))) of width 256, Linear(128, 10)), where every weight
sits at one position, the case the layer-wise Grams are for. Methods: "layerwise", "jacobian",
"ntk_vp" and "vmap(jacrev)", a plain torch.func baseline written here (vmap(jacrev) over all
parameters, concatenated, one matrix product). Ratios are medians against "jacobian" and against
"vmap(jacrev)"; each row notes its largest difference from the kernel computed in float64 (by
"jacobian" on float64 copies), relative to that kernel's largest entry.
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
ANY_METHODS = ("layerwise", "jacobian", "ntk_vp", "vmap(jacrev)")
ANY_CASES = ("resnet", "transformer", "resmlp")


def cnn(channels: int = 64, layers: int = 3, k: int = 10, seed: int = 0):
    """The CNN case: layers x (Conv2d 3x3 "same", ReLU), global average pooling, Linear(channels, k)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    body = []
    for index in range(layers):
        body += [nn.Conv2d(1 if index == 0 else channels, channels, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, k))


def resnet(k: int = 10, seed: int = 0):
    """The small ResNet of the module doc (eval mode, BatchNorm statistics drawn at random)."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
            self.bn1, self.relu = nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.skip = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            out += self.skip(x)
            return self.relu(out)

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                      nn.ReLU(inplace=True))
            self.stages = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
            self.fc = nn.Linear(64, k)

        def forward(self, x):
            return self.fc(self.stages(self.stem(x)).mean((2, 3)))

    torch.manual_seed(seed)
    net = ResNet().eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(1 + 0.1 * torch.rand(m.num_features, generator=g))
    return net


def transformer(k: int = 10, seed: int = 0, d: int = 64, layers: int = 2):
    """The transformer encoder of the module doc (eval mode)."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layer = nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=2 * d, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.fc = nn.Linear(d, k)

        def forward(self, x):
            return self.fc(self.encoder(x).mean(1))

    torch.manual_seed(seed)
    return Encoder().eval()


def resmlp(k: int = 10, seed: int = 0, d: int = 128, width: int = 256, blocks: int = 3):
    """The residual MLP of the module doc: Linear(128, d), blocks x (x + Linear(GELU(Linear(LayerNorm(x))))),
    Linear(d, k)."""
    import torch
    from torch import nn

    class ResMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(128, d)
            self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, width), nn.GELU(),
                                                      nn.Linear(width, d)) for _ in range(blocks))
            self.fc = nn.Linear(d, k)

        def forward(self, x):
            h = self.inp(x)
            for block in self.blocks:
                h = h + block(h)
            return self.fc(h)

    torch.manual_seed(seed)
    return ResMLP()


def vmap_jacrev_ntk(net, x, full: bool):
    """The plain torch.func baseline: per-sample Jacobians over all parameters, one contraction."""
    import torch
    from torch.func import functional_call, jacrev, vmap

    params = {n: p.detach() for n, p in net.named_parameters()}

    def single(p, xi):
        return functional_call(net, p, (xi.unsqueeze(0).clone(),)).squeeze(0)

    with torch.no_grad():
        jac = vmap(jacrev(single), in_dims=(None, 0))(params, x)
    j = torch.cat([t.reshape(x.shape[0], t.shape[1], -1) for t in jac.values()], dim=2)  # (N, k, P)
    if full:
        return torch.einsum("ikp,jlp->ijkl", j, j)
    return torch.einsum("ikp,jkp->ij", j, j) / j.shape[1]


def worker(args: argparse.Namespace) -> None:
    """Time one method in this process; print a JSON line."""
    import numpy as np
    import torch

    import torchntk as tn
    from torchntk.empirical import empirical_ntk

    if args.case in ANY_CASES:
        return any_worker(args)
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


def any_worker(args: argparse.Namespace) -> None:
    """Time one method on the resnet or transformer case; save the kernel (.npy) for comparison."""
    import numpy as np
    import torch

    from torchntk.empirical import empirical_ntk

    g = torch.Generator().manual_seed(1)
    if args.case == "resnet":
        net, x = resnet(args.k), torch.randn(args.n, 3, 32, 32, generator=g)
    elif args.case == "resmlp":
        net, x = resmlp(args.k), torch.randn(args.n, 128, generator=g)
    else:
        net, x = transformer(args.k), torch.randn(args.n, args.seq, 64, generator=g)
    if args.float64:
        net, x = net.double(), x.double()
    full = args.outputs == "full"

    def call():
        if args.method == "vmap(jacrev)":
            return vmap_jacrev_ntk(net, x, full)
        return empirical_ntk(net, x, method=args.method, outputs=args.outputs)

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    kernel = call()
    times, cpu = [time.perf_counter() - start], []
    repeats = args.repeats if times[0] < args.slow else 0
    for _ in range(repeats):
        start, cpu0 = time.perf_counter(), time.process_time()
        kernel = call()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu0)
    if repeats:
        times = times[1:]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.save:
        np.save(args.save, kernel.numpy())
    print(json.dumps({"times": times, "cpu": cpu, "peak_mb": (rss - rss0) / 1024}))


def run_any(args: argparse.Namespace, case: str, torch_env: dict[str, str], tmp: Path) -> None:
    import numpy as np

    what = {"resnet": "small ResNet (16-32-64, 3 BasicBlocks), 3 x 32 x 32",
            "transformer": f"transformer encoder (2 layers, d_model 64, 4 heads), {args.seq} tokens",
            "resmlp": "residual MLP (128 -> 3 pre-norm blocks 128-256-128 -> 10)"}[case]
    print(f"\n{what}, N = {args.any_n} against itself, k = 10, float32; torch threads "
          f"{os.environ.get('OMP_NUM_THREADS', 'default')}; load average {os.getloadavg()[0]:.1f}")
    header = f"{'outputs':>7} {'method':>13} {'median s':>9} {'min s':>8} {'cpu s':>7} {'vs jacobian':>11} " \
             f"{'vs vmap':>8} {'peak MB':>8}  max |diff| / max |float64|"
    print(header)
    print("-" * len(header))
    for outputs in args.outputs:
        rows: dict[str, dict] = {}
        reference = tmp / f"{case}_{outputs}_float64.npy"
        run([sys.executable, __file__, "--worker", "--case", case, "--method", "jacobian", "--n", str(args.any_n),
             "--seq", str(args.seq), "--k", "10", "--outputs", outputs, "--repeats", "0", "--float64", "--save",
             str(reference)], args.timeout, torch_env)
        for method in args.any_methods:
            save = tmp / f"{case}_{outputs}_{method.replace('(', '_').replace(')', '')}.npy"
            command = [sys.executable, __file__, "--worker", "--case", case, "--method", method, "--n",
                       str(args.any_n), "--seq", str(args.seq), "--k", "10", "--outputs", outputs, "--repeats",
                       str(args.repeats), "--slow", str(args.slow), "--save", str(save)]
            rows[method] = run(command, args.timeout, torch_env)
            rows[method]["file"] = save
        base = {m: statistics.median(rows[m]["times"]) for m in ("jacobian", "vmap(jacrev)")
                if "times" in rows.get(m, {})}
        ref = np.load(reference, allow_pickle=False) if reference.exists() else None
        for method, row in rows.items():
            if "error" in row:
                print(f"{outputs:>7} {method:>13} {'-':>9} {'-':>8} {'-':>7} {'-':>11} {'-':>8} {'-':>8}  "
                      f"{row['error']}")
                continue
            median = statistics.median(row["times"])
            cpu = f"{statistics.median(row['cpu']):7.2f}" if row.get("cpu") else f"{'-':>7}"
            ratios = [f"{base[m] / median:{w - 1}.2f}x" if m in base else f"{'-':>{w}}"
                      for m, w in (("jacobian", 11), ("vmap(jacrev)", 8))]
            diff = "-" if ref is None else \
                f"{np.abs(np.load(row['file'], allow_pickle=False) - ref).max() / np.abs(ref).max():.1e}"
            note = "; one call" if len(row["times"]) == 1 else ""
            print(f"{outputs:>7} {method:>13} {median:9.3f} {min(row['times']):8.3f} {cpu} {ratios[0]} {ratios[1]} "
                  f"{row['peak_mb']:8.0f}  {diff}{note}")


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
    parser.add_argument("--cases", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn", *ANY_CASES])
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
    parser.add_argument("--any-n", type=int, default=32, help="inputs of the resnet and transformer cases")
    parser.add_argument("--seq", type=int, default=16, help="tokens of the transformer case")
    parser.add_argument("--any-methods", nargs="+", default=list(ANY_METHODS), choices=list(ANY_METHODS))
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
    parser.add_argument("--float64", action="store_true", help=argparse.SUPPRESS)
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
        for case in ANY_CASES:
            if case in args.cases:
                run_any(args, case, torch_env, Path(tmp))
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
