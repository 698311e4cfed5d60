"""The command line's kernel steps (`torchntk.cli.kernel.blocked_kernels`, which moves the progress
bar) against one `Serial.kernels` call on the same inputs: time, and whether the bits agree.

Steps of whole tiles compute exactly the tiles of one call, so they should cost the same and give
the same bits; a kernel of fewer than 16 tiles goes in steps of ~N/32 rows, whose cost is the
per-call overhead (a few ms a step). Each case alternates the two ways, and the best of the
repeats is shown.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cli_steps.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cli_steps.py --repeats 7
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import torchntk as tn
from torchntk.cli.kernel import MIN_STEPS, _step_rows, blocked_kernels


def cases(rng: np.random.Generator) -> list[tuple[str, tn.Serial, torch.Tensor]]:
    flat = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.Conv((3, 3), padding="same"), tn.ReLU(),
                     tn.Flatten(), tn.Dense())
    pooled = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.AvgPool((2, 2), stride=2),
                       tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    def data(*shape: int) -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal(shape))
    return [("mlp(3), N=4000, d=20", tn.mlp(3), data(4000, 20)),
            ("mlp(3), N=512, d=20", tn.mlp(3), data(512, 20)),
            ("conv-conv-flatten, N=512, 1x8x8", flat, data(512, 1, 8, 8)),
            ("conv-conv-flatten, N=2048, 1x8x8", flat, data(2048, 1, 8, 8)),
            ("conv-avgpool-conv-gap, N=200, 1x8x8", pooled, data(200, 1, 8, 8))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| kernel (x against itself) | steps x rows | one call (s) | CLI steps (s) | ratio | same bits |")
    print("|---|---:|---:|---:|---:|---|")
    for name, spec, x in cases(np.random.default_rng(0)):
        one, steps = [], []
        for _ in range(args.repeats):  # alternating, so that drift in the machine's speed falls on both
            start = time.perf_counter()
            nngp, ntk = spec.kernels(x)
            one.append(time.perf_counter() - start)
            start = time.perf_counter()
            out = blocked_kernels(spec, x)
            steps.append(time.perf_counter() - start)
        rows = _step_rows(spec, x, None, MIN_STEPS)
        same = torch.equal(out["nngp"], nngp) and torch.equal(out["ntk"], ntk)
        print(f"| {name} | {-(-x.shape[0] // rows)} x {rows} | {min(one):.3f} | {min(steps):.3f} | "
              f"{min(steps) / min(one):.2f} | {'yes' if same else 'no (round-off)'} |")


if __name__ == "__main__":
    main()
