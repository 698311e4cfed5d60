"""Side inputs on the command line: ``--adjacency`` / ``--mask`` (and ``...2`` for DATA2) for
``torchntk kernel``, the training ones saved by ``torchntk fit`` and the test ones given to
``torchntk predict``; kernels and predictions checked against spec.kernels directly, and every
bad file one ``Error:`` line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from cli_runner import assert_one_line_error, run
from side_specs import graph_spec, sequence_spec

RIDGE = 1e-8




@pytest.fixture
def graphs(tmp_path):
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(9, 2, 5)), "x2": rng.normal(size=(4, 2, 5)),
            "A": (rng.random((9, 5, 5)) < 0.4).astype(float), "A2": (rng.random((4, 5, 5)) < 0.4).astype(float)}
    for name, a in data.items():
        np.save(tmp_path / f"{name}.npy", a)
    (tmp_path / "gnn.json").write_text(json.dumps(graph_spec().to_dict()))
    np.savez(tmp_path / "train.npz", x=data["x"], y=rng.normal(size=9))
    return data


@pytest.fixture
def sequences(tmp_path):
    rng = np.random.default_rng(1)
    positions = np.arange(6)
    data = {"s": rng.normal(size=(8, 2, 6)), "s2": rng.normal(size=(3, 2, 6)),
            "m": positions < rng.integers(2, 7, size=8)[:, None], "m2": positions < np.array([6, 2, 4])[:, None]}
    for name, a in data.items():
        np.save(tmp_path / f"{name}.npy", a)
    (tmp_path / "seq.json").write_text(json.dumps(sequence_spec().to_dict()))
    return data


def _kernel(tmp_path, *args):
    result = run("kernel", *args, "--no-standardize", "-q", "-o", tmp_path / "K.npy")
    assert result.exit_code == 0, result.output
    return np.load(tmp_path / "K.npy", allow_pickle=False)


# Blocks of rows against the one call of spec.kernels: the same float64 operations on the same
# numbers, so only summation order can differ (~1e-15 relative); 1e-12 leaves room for that.
TOL = {"rtol": 1e-12, "atol": 1e-14}


def test_kernel_with_adjacencies_is_spec_kernels(tmp_path, graphs):
    spec, g = graph_spec(), graphs
    got = _kernel(tmp_path, tmp_path / "x.npy", "--spec", tmp_path / "gnn.json", "--adjacency", tmp_path / "A.npy",
                  "--tile", 2)      # several steps of rows, each with its rows of the adjacency
    np.testing.assert_allclose(got, spec.ntk(g["x"], adjacency=g["A"]), **TOL)
    got = _kernel(tmp_path, tmp_path / "x.npy", tmp_path / "x2.npy", "--spec", tmp_path / "gnn.json",
                  "--adjacency", tmp_path / "A.npy", "--adjacency2", tmp_path / "A2.npy", "--tile", 2)
    np.testing.assert_allclose(got, spec.ntk(g["x"], g["x2"], adjacency=(g["A"], g["A2"])), **TOL)


def test_kernel_with_an_edge_list_file(tmp_path, graphs):
    g = graphs
    arcs = [np.argwhere(a > 0) for a in g["A"]]
    edges = np.full((9, max(map(len, arcs)), 2), -1, dtype=np.int64)
    for n, e in enumerate(arcs):  # the fixture, one graph at a time
        edges[n, :len(e)] = e
    np.save(tmp_path / "E.npy", edges)
    got = _kernel(tmp_path, tmp_path / "x.npy", "--spec", tmp_path / "gnn.json", "--adjacency", tmp_path / "E.npy")
    # Gather/scatter sums against the dense products of the same 0/1 weights: float64 round-off.
    np.testing.assert_allclose(got, graph_spec().ntk(g["x"], adjacency=g["A"]), rtol=1e-10, atol=1e-12)


def test_kernel_with_masks_is_spec_kernels(tmp_path, sequences):
    spec, s = sequence_spec(), sequences
    files = {name: tmp_path / f"{name}.npy" for name in s}
    got = _kernel(tmp_path, files["s"], files["s2"], "--spec", tmp_path / "seq.json", "--mask", files["m"],
                  "--mask2", files["m2"], "--kind", "ntk", "--tile", 3)
    np.testing.assert_allclose(got, spec.ntk(s["s"], s["s2"], mask=(s["m"], s["m2"])), **TOL)
    # A mask for DATA only: every position of DATA2 is real.
    got = _kernel(tmp_path, files["s"], files["s2"], "--spec", tmp_path / "seq.json", "--mask", files["m"])
    np.testing.assert_allclose(got, spec.ntk(s["s"], s["s2"], mask=(s["m"], np.ones((3, 6), bool))), **TOL)
    assert np.abs(got - spec.ntk(s["s"], s["s2"])).max() > 1e-3    # and the mask is really used


def test_fit_saves_the_training_adjacency_and_predict_takes_the_tests(tmp_path, graphs):
    spec, g = graph_spec(), graphs
    result = run("fit", tmp_path / "train.npz", "--array", "x", "--target", "y", "--spec", tmp_path / "gnn.json",
                 "--adjacency", tmp_path / "A.npy", "--no-standardize", "--ridge", RIDGE, "-q", "-o", tmp_path / "m")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "m" / "arrays.npz", allow_pickle=False) as archive:
        np.testing.assert_array_equal(archive["adjacency_train"], g["A"])
        y = archive["y_train"][:, 0]
    result = run("predict", tmp_path / "m", tmp_path / "x2.npy", "--adjacency", tmp_path / "A2.npy", "-q",
                 "-o", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "p.csv", newline="") as handle:
        mean = np.array([float(row["mean"]) for row in csv.DictReader(handle)])
    want = spec.ntk(g["x2"], g["x"], adjacency=(g["A2"], g["A"])) @ np.linalg.solve(
        spec.ntk(g["x"], adjacency=g["A"]) + RIDGE * np.eye(9), y)
    # The t = inf mean by an eigendecomposition against a direct solve (9 x 9, ridge 1e-8): ~1e-10;
    # the CSV holds 12 significant digits.
    np.testing.assert_allclose(mean, want, rtol=1e-9, atol=1e-10)
    result = run("predict", tmp_path / "m", tmp_path / "x2.npy")
    assert_one_line_error(result, "the model's network has a layer that reads adjacency", code=2)
    result = run("predict", tmp_path / "m", tmp_path / "x2.npy", "--adjacency", tmp_path / "A.npy")
    assert_one_line_error(result, "holds 9 rows (shape (9, 5, 5)) but")


def test_missing_or_misplaced_side_inputs_are_usage_errors(tmp_path, graphs, sequences):
    x, gnn = tmp_path / "x.npy", tmp_path / "gnn.json"
    assert_one_line_error(run("kernel", x, "--spec", gnn, "-o", tmp_path / "K.npy"),
                          "has a layer that reads adjacency (Aggregate): give --adjacency FILE.npy", code=2)
    assert_one_line_error(run("kernel", x, tmp_path / "x2.npy", "--spec", gnn, "--adjacency", tmp_path / "A.npy",
                              "-o", tmp_path / "K.npy"), "give --adjacency2 FILE.npy for DATA2", code=2)
    assert_one_line_error(run("kernel", x, "--spec", gnn, "--adjacency", tmp_path / "A.npy", "--adjacency2",
                              tmp_path / "A2.npy", "-o", tmp_path / "K.npy"), "--adjacency2 is for DATA2", code=2)
    assert_one_line_error(run("kernel", tmp_path / "s.npy", "--spec", tmp_path / "seq.json", "--adjacency",
                              tmp_path / "A.npy", "-o", tmp_path / "K.npy"),
                          "--adjacency: no layer of the --spec network reads adjacency", code=2)
    assert_one_line_error(run("kernel", tmp_path / "s.npy", "--mask", tmp_path / "m.npy", "-o", tmp_path / "K.npy"),
                          "--mask goes with a --spec network", code=2)
    assert_one_line_error(run("fit", tmp_path / "train.npz", "--array", "x", "--target", "y", "--spec", gnn,
                              "-o", tmp_path / "m"), "give --adjacency FILE.npy for TRAIN", code=2)


def test_bad_side_input_files_are_one_line_errors(tmp_path, graphs, sequences):
    x, gnn, out = tmp_path / "x.npy", tmp_path / "gnn.json", tmp_path / "K.npy"
    np.save(tmp_path / "V4.npy", np.ones((9, 4, 4)))
    assert_one_line_error(run("kernel", x, "--spec", gnn, "--adjacency", tmp_path / "V4.npy", "-o", out),
                          "is over 4 nodes but the inputs (N, C, V) have V = 5")
    assert_one_line_error(run("kernel", x, "--spec", gnn, "--adjacency", tmp_path / "A2.npy", "-o", out),
                          "holds 4 rows (shape (4, 5, 5)) but")
    np.save(tmp_path / "objects.npy", np.array([None] * 9, dtype=object), allow_pickle=True)
    assert_one_line_error(run("kernel", x, "--spec", gnn, "--adjacency", tmp_path / "objects.npy", "-o", out),
                          f"--adjacency {tmp_path / 'objects.npy'}:")
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    assert_one_line_error(run("kernel", x, "--spec", gnn, "--adjacency", tmp_path / "junk.npy", "-o", out),
                          f"--adjacency {tmp_path / 'junk.npy'}:")
    assert_one_line_error(run("kernel", x, "--spec", gnn, "--adjacency", gnn, "-o", out), "give a .npy file", code=2)
    np.save(tmp_path / "m3.npy", np.full((8, 6), 3))
    assert_one_line_error(run("kernel", tmp_path / "s.npy", "--spec", tmp_path / "seq.json", "--mask",
                              tmp_path / "m3.npy", "-o", out), "must be boolean")
    np.save(tmp_path / "m_short.npy", np.ones((8, 5), bool))
    assert_one_line_error(run("kernel", tmp_path / "s.npy", "--spec", tmp_path / "seq.json", "--mask",
                              tmp_path / "m_short.npy", "-o", out), "must have shape (8, 6)")


def test_fit_and_predict_with_masks(tmp_path, sequences):
    spec, s = sequence_spec(), sequences
    y = s["s"][:, 0].sum(1)
    np.savez(tmp_path / "seq_train.npz", x=s["s"], y=y)
    result = run("fit", tmp_path / "seq_train.npz", "--array", "x", "--target", "y", "--spec", tmp_path / "seq.json",
                 "--mask", tmp_path / "m.npy", "--no-standardize", "--ridge", RIDGE, "-q", "-o", tmp_path / "m")
    assert result.exit_code == 0, result.output

    def predicted(*mask):
        result = run("predict", tmp_path / "m", tmp_path / "s2.npy", *mask, "-q", "-o", tmp_path / "p.csv")
        assert result.exit_code == 0, result.output
        with open(tmp_path / "p.csv", newline="") as handle:
            return np.array([float(row["mean"]) for row in csv.DictReader(handle)])
    solve = np.linalg.solve(spec.ntk(s["s"], mask=s["m"]) + RIDGE * np.eye(8), y)
    want = spec.ntk(s["s2"], s["s"], mask=(s["m2"], s["m"])) @ solve
    # As for the graphs above: eigendecomposition against a direct solve, 12 digits in the CSV.
    np.testing.assert_allclose(predicted("--mask", tmp_path / "m2.npy"), want, rtol=1e-9, atol=1e-10)
    # Without --mask every position of DATA is real.
    want = spec.ntk(s["s2"], s["s"], mask=(np.ones((3, 6), bool), s["m"])) @ solve
    np.testing.assert_allclose(predicted(), want, rtol=1e-9, atol=1e-10)
