"""Neural-tangents side of bench_empirical.py; run by it with neural-tangents' own venv (jax; docs/benchmarks.md).

    python _nt_empirical.py DATA.npz IMPLEMENTATION OUTPUTS REPEATS

DATA.npz (written by bench_empirical.py) holds the inputs x, the weights W0, b0, W1, b1, ... of
a torchntk ReLU network (NTK parameterisation, weight_std 1, bias_std BIAS_STD), or C0, b0, C1,
b1, ..., W_L, b_L of the CNN case (nn.Conv2d 3x3 "same" + ReLU layers, global average pooling,
nn.Linear: standard parameterisation), and, if present, the kernel torchntk computed for it. The
same network is built in stax (W transposed; convolutions channels last, HWIO), its
empirical NTK of x against itself is timed, and the largest difference from torchntk's kernel is
reported. Prints one JSON line.
"""

import json
import resource
import sys
import time
import types

sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402


def main() -> None:
    path, implementation, outputs, repeats = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    data = np.load(path, allow_pickle=False)
    if any(key.startswith("C") for key in data.files):
        apply_fn, params, x = _cnn(data)
    else:
        apply_fn, params, x = _mlp(data)
    kernel_fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,) if outputs == "trace" else (),
                                            vmap_axes=0, implementation=implementation))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    kernel = kernel_fn(x, None, params).block_until_ready()  # includes compilation
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        kernel_fn(x, None, params).block_until_ready()
        times.append(time.perf_counter() - start)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"times": times, "first": first, "peak_mb": (rss - rss0) / 1024}
    if "kernel" in data.files:
        ours = data["kernel"]
        theirs = np.asarray(kernel)
        if outputs == "full":  # stax gives (N1, N2, k, k) as well
            theirs = theirs.reshape(ours.shape)
        result["max_rel_diff"] = float(np.abs(theirs - ours).max() / np.abs(ours).max())
    print(json.dumps(result))


def _mlp(data):
    bias_std = float(data["bias_std"])
    depth = sum(1 for key in data.files if key.startswith("W"))
    layers = []
    for index in range(depth):
        if index:
            layers.append(stax.Relu())
        width = data[f"W{index}"].shape[0]
        layers.append(stax.Dense(width, W_std=1.0, b_std=bias_std, parameterization="ntk"))
    _, apply_fn, _ = stax.serial(*layers)
    params = []
    for index in range(depth):
        if index:
            params.append(())
        params.append((jnp.asarray(data[f"W{index}"].T), jnp.asarray(data[f"b{index}"])))
    return apply_fn, params, jnp.asarray(data["x"])


def _cnn(data):
    convs = sorted(int(key[1:]) for key in data.files if key.startswith("C"))
    layers, params = [], []
    for index in convs:
        weight = data[f"C{index}"]  # (C_out, C_in, 3, 3) -> HWIO
        layers += [stax.Conv(weight.shape[0], weight.shape[2:], padding="SAME", parameterization="standard"),
                   stax.Relu()]
        params += [(jnp.asarray(weight.transpose(2, 3, 1, 0)), jnp.asarray(data[f"b{index}"])), ()]
    dense = max(int(key[1:]) for key in data.files if key.startswith("W"))
    layers += [stax.GlobalAvgPool(), stax.Dense(data[f"W{dense}"].shape[0], parameterization="standard")]
    params += [(), (jnp.asarray(data[f"W{dense}"].T), jnp.asarray(data[f"b{dense}"]))]
    _, apply_fn, _ = stax.serial(*layers)
    return apply_fn, params, jnp.asarray(data["x"].transpose(0, 2, 3, 1))  # NCHW -> NHWC


if __name__ == "__main__":
    main()
