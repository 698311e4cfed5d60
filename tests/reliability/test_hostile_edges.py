"""Class 7: silent wrong results one layer in. Out-of-core predictions refuse a test kernel that
belongs to another training kernel; commands never overwrite another program's report files;
a network whose output keeps positions is one clear error; damaged, full or abandoned stores
say what happened, that the finished tiles are kept and how to resume; the package's parts
are attributes after a bare import; bad hyperparameters and inputs name themselves."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import torchntk as tn

SPEC = tn.mlp(3)
N, M, TILE = 20, 6, 8


def _x(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- predict_from_store: every test kernel is checked against the training manifest -----------

@pytest.fixture
def stores(tmp_path):
    pytest.importorskip("zarr")
    x, x_test = _x(N, 0), _x(M, 1)

    def store(name, *args, **options):
        options = {"tile": TILE, "dtype": torch.float64, "progress": False, **options}
        return tn.kernel_matrix(*args, store=tmp_path / f"{name}.zarr", **options)

    return {"x": x, "x_test": x_test, "y": torch.sin(x[:, 0]), "train": store("train", SPEC, x),
            "test": store("test", SPEC, x_test, x), "nngp": store("nngp", SPEC, x_test, x, kind="nngp"),
            "deeper": store("deeper", tn.mlp(4), x_test, x), "moved": store("moved", SPEC, x_test, x + 1),
            "single": store("single", SPEC, x_test, x, dtype=torch.float32)}


def _predict(stores, **test):
    from torchntk.dynamics.stored import predict_from_store

    return predict_from_store(stores["train"], stores["y"], [1.0, float("inf")], ridge=1e-3, progress=False, **test)


@pytest.mark.parametrize("case, match", [
    ("nngp", r"the kernel kind: training kernel has 'ntk', test kernel has 'nngp'"),
    ("deeper", r"the network description"),
    ("moved", r"the data x \(sha256\)"),
    ("single", r"the dtype: training kernel has 'float64', test kernel has 'float32'"),
])
def test_a_test_train_store_of_another_computation_is_refused(stores, case, match):
    # Each of these used to give test means off by 0.6 to 17 without a word.
    with pytest.raises(ValueError, match=r"(?s)test-train store .* does not match the training store.*" + match):
        _predict(stores, test_train=stores[case])


@pytest.mark.parametrize("change, match", [
    ({"spec": tn.mlp(4)}, r"the network description"),
    ({"x_train": "moved"}, r"the data x \(sha256\)"),
    ({"kind": "nngp"}, r"the kernel kind: training kernel has 'ntk', test kernel has 'nngp'"),
])
def test_recomputing_from_another_spec_inputs_or_kind_is_refused(stores, change, match):
    given = {"spec": SPEC, "x_train": stores["x"], "x_test": stores["x_test"], "kind": "ntk", **change}
    if given["x_train"] == "moved":
        given["x_train"] = stores["x"] + 1
    with pytest.raises(ValueError, match=r"(?s)spec, x_train and kind do not match the training store.*" + match):
        _predict(stores, **given)


def test_matching_test_kernels_still_predict_the_same(stores):
    stored, _ = _predict(stores, test_train=stores["test"])
    recomputed, _ = _predict(stores, spec=SPEC, x_train=stores["x"], x_test=stores["x_test"])
    torch.testing.assert_close(stored.mean, recomputed.mean, rtol=1e-12, atol=1e-12)


def test_a_computed_training_kernel_is_checked_too(stores):
    from torchntk.dynamics.stored import predict_from_store
    from torchntk.scale import ComputedKernel

    computed = ComputedKernel(SPEC, stores["x"], tile=TILE)
    with pytest.raises(ValueError, match=r"does not match the computed training kernel"):
        predict_from_store(computed, stores["y"], 1.0, test_train=stores["deeper"], progress=False)


# -- foreign report files are never overwritten ---------------------------------------------------

@pytest.fixture
def never_run(monkeypatch):
    """Fail loudly if a command reaches its experiments: the output check must come first."""
    import torchntk.studies.arch_sweep as arch_sweep
    import torchntk.studies.runner as runner

    def refuse(*args, **kwargs):
        raise AssertionError("the work started before the output files were checked")
    for module, name in ((runner, "reproduce"), (runner, "study"), (arch_sweep, "measure_arch_sweep")):
        monkeypatch.setattr(module, name, refuse)


REPORTS = ["results.json", "report.html", "report.md"]
ARCH_STUDY = ["study", "--spec", "{spec}", "--data", "digits", "--points", "4", "--widths", "2,3,4", "--quiet"]


@pytest.mark.parametrize("command, name", [
    *[(["reproduce", "--smoke", "--quiet"], name) for name in REPORTS],
    *[(["study", "--widths", "8,16,32", "--quiet"], name) for name in REPORTS],
    *[(ARCH_STUDY, name) for name in ("results.json", "report.md")],   # it writes no report.html
])
def test_reports_never_overwrite_another_programs_files(cli, tmp_path, never_run, command, name):
    spec = tmp_path / "cnn.json"
    spec.write_text(json.dumps(tn.serial(tn.Conv(3), tn.ReLU(), tn.Flatten(), tn.Dense()).to_dict()))
    out = tmp_path / "mine"
    out.mkdir()
    content = '{"my": "own results"}' if name.endswith(".json") else "# my own notes\n"
    (out / name).write_text(content)
    cli.error(*[part.format(spec=spec) for part in command], "--out", out,
              match=("--out", name, "torchntk did not write"))
    assert (out / name).read_text() == content


def test_library_reports_refuse_foreign_files_and_replace_their_own(tmp_path):
    from torchntk.studies.report import REPORT_FILES, write_report

    first = write_report([], tmp_path, title="t", meta={})
    assert set(p.name for p in first.values()) == set(REPORT_FILES)
    write_report([], tmp_path, title="t", meta={})  # torchntk's own files: replaced
    (tmp_path / "report.md").write_text("someone else's\n")
    with pytest.raises(ValueError, match=r"report\.md, which torchntk did not write"):
        write_report([], tmp_path, title="t", meta={})
    assert (tmp_path / "report.md").read_text() == "someone else's\n"


def test_figures_of_another_program_are_refused_and_old_reports_replaced(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from torchntk._outputs import check_replaceable
    from torchntk.studies.plots import save
    from torchntk.studies.report import REPORT_FILES

    figure = plt.figure()
    try:
        (tmp_path / "fig1_ntk.png").write_bytes(b"\x89PNG someone else's figure")
        with pytest.raises(ValueError, match=r"fig1_ntk\.png, which torchntk did not write"):
            save(figure, tmp_path / "fig1_ntk.png")
        (tmp_path / "fig1_ntk.png").unlink()
        save(figure, tmp_path / "fig1_ntk.png")
        save(figure, tmp_path / "fig1_ntk.png")  # its own figure: replaced
    finally:
        plt.close(figure)
    # A report folder from before files were marked (its results.json, headings and figures).
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text(json.dumps({"title": "t", "meta": {"torchntk": "0.2.0"}}))
    (old / "report.html").write_text("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>\n"
                                     "<title>torchntk: the paper's claims on finite networks</title>")
    (old / "report.md").write_text("# torchntk: the paper's claims on finite networks\n")
    (old / "fig1_ntk.png").write_bytes(b"\x89PNG an unmarked figure")
    check_replaceable(old, [*REPORT_FILES, "fig1_ntk.png"])


# -- networks whose output keeps positions --------------------------------------------------------

def test_a_conv_without_readout_is_one_clear_cli_error(cli, tmp_path):
    images = tmp_path / "images.npy"
    np.save(images, np.random.default_rng(0).normal(size=(4, 1, 6, 6)))
    for name, spec, match in [
        ("relu", tn.serial(tn.Conv(3), tn.ReLU()), "ends with the output of a weighted layer"),
        ("conv", tn.serial(tn.Conv(3), tn.ReLU(), tn.Conv(3)), "keeps positions (2, 2)"),
    ]:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(spec.to_dict()))
        cli.error("kernel", images, "--spec", path, "-o", tmp_path / "K.npy", match=match)
    assert not (tmp_path / "K.npy").exists()


def test_a_conv_without_readout_is_refused_before_a_store_is_created(tmp_path):
    pytest.importorskip("zarr")
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"keeps positions \(2, 2\).*Flatten\(\) or GlobalAvgPool\(\)"):
        tn.kernel_matrix(tn.serial(tn.Conv(3), tn.ReLU(), tn.Conv(3)), x, store=tmp_path / "K.zarr", tile=2,
                         progress=False)
    assert not (tmp_path / "K.zarr").exists()


# -- ridge and GPyTorch inputs -----------------------------------------------------------------------

@pytest.mark.parametrize("ridge", [1e300, 10**400, float("inf")])
def test_an_absurd_ridge_is_a_clear_value_error(ridge):
    with pytest.raises(ValueError, match=r"ridge must be a finite number in \[0, 1e\+150\]"):
        tn.GradientFlow(torch.eye(3, dtype=torch.float64), torch.ones(3), ridge=ridge)


def test_gpytorch_integer_inputs_are_named_not_bias_std():
    pytest.importorskip("gpytorch")
    from torchntk.gpytorch import NTKKernel

    with pytest.raises(TypeError, match=r"floating-point inputs.*x1 has dtype torch.int64"):
        NTKKernel(depth=2)(torch.ones(3, 2, dtype=torch.int64)).to_dense()


# -- damaged, full and abandoned stores -----------------------------------------------------------

@pytest.fixture
def small_store(tmp_path):
    pytest.importorskip("zarr")
    return tn.kernel_matrix(SPEC, _x(N, 0), store=tmp_path / "K.zarr", tile=TILE, dtype=torch.float64,
                            progress=False)


def test_a_truncated_zarr_json_is_a_damaged_store_not_a_foreign_folder(cli, small_store):
    meta = Path(small_store.path) / "zarr.json"
    meta.write_bytes(meta.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"is a damaged torchntk kernel store: its zarr\.json.*cannot be read"):
        tn.scale.open_kernel_matrix(small_store.path)
    with pytest.raises(ValueError, match=r"damaged torchntk kernel store"):
        tn.kernel_matrix(SPEC, _x(N, 0), store=small_store.path, tile=TILE, dtype=torch.float64, progress=False)
    cli.error("store", "verify", small_store.path, match="damaged torchntk kernel store")


def test_a_full_disk_names_the_store_and_resumes(tmp_path, monkeypatch):
    pytest.importorskip("zarr")
    from torchntk.scale.store import KernelStore

    write, calls = KernelStore.write_tile, []

    def full_after_two(self, i, j, blocks):
        calls.append((i, j))
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(self, i, j, blocks)

    x, path = _x(N, 0), tmp_path / "K.zarr"
    monkeypatch.setattr(KernelStore, "write_tile", full_after_two)
    with pytest.raises(OSError, match=r"(?s)kernel store .*K\.zarr.*No space left.*kept.*free about.*resume") as caught:
        tn.kernel_matrix(SPEC, x, store=path, tile=TILE, dtype=torch.float64, progress=False)
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.setattr(KernelStore, "write_tile", write)
    again = tn.kernel_matrix(SPEC, x, store=path, tile=TILE, dtype=torch.float64, progress=False)
    assert again.summary.skipped == 2  # the tiles written before the disk filled were kept
    np.testing.assert_allclose(np.asarray(again), SPEC.ntk(x).numpy(), rtol=1e-12, atol=0)


def test_losing_every_dask_worker_keeps_the_tiles_and_says_how_to_resume(tmp_path, monkeypatch):
    pytest.importorskip("zarr")
    distributed = pytest.importorskip("distributed")
    from torchntk.scale import compute

    x, path = _x(N, 0), tmp_path / "K.zarr"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        record = compute._Recorder.__call__

        def lose_the_workers_after_two(self, i, j, digests):
            record(self, i, j, digests)
            if self.count == 2:
                for worker in list(cluster.workers.values()):
                    client.sync(worker.close)

        monkeypatch.setattr(compute._Recorder, "__call__", lose_the_workers_after_two)
        with pytest.raises(RuntimeError, match=r"(?s)Dask cluster failed after 2 of .* finished tiles are kept.*"
                                               r"resume"):
            tn.kernel_matrix(SPEC, x, store=path, tile=TILE, dtype=torch.float64, client=client, progress=False)
    monkeypatch.undo()
    again = tn.kernel_matrix(SPEC, x, store=path, tile=TILE, dtype=torch.float64, progress=False)
    assert again.summary.skipped >= 2
    np.testing.assert_allclose(np.asarray(again), SPEC.ntk(x).numpy(), rtol=1e-12, atol=0)


# -- the package's parts after a bare import -----------------------------------------------------

def test_subpackages_are_attributes_after_a_bare_import():
    code = "import torchntk as tn; print(tn.scale.open_kernel_matrix.__name__, tn.dynamics.__name__)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["open_kernel_matrix", "torchntk.dynamics"]
