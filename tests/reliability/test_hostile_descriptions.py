"""Hostile descriptions: a description that would give a silently wrong kernel, would crash deep
inside, would grow without bound, or could be saved but not read back, is refused when it is
built or before any work, with a message that says what is wrong and what to do."""

import json

import numpy as np
import pytest
import torch

import torchntk as tn
from torchntk.engine import base, tiles
from torchntk.model_io import KernelModel, ModelSettings
from torchntk.scale import kernel_matrix, open_kernel_matrix
from torchntk.taylor import taylor_expand

X = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("branches", [
    tn.parallel(tn.Identity(), tn.Identity()),
    tn.parallel(tn.ReLU(), tn.Identity()),
    tn.parallel(tn.Erf(), tn.Identity()),
    tn.parallel(tn.serial(tn.FanOut(2), tn.parallel(tn.Dense(), tn.Identity()), tn.FanInSum()), tn.Identity()),
], ids=["identity-identity", "relu-identity", "erf-identity", "residual-identity"])
def test_a_sum_of_correlated_branches_is_refused(branches):
    """Branches with no weights of their own since the split are functions of one input; the kernel
    of their sum is not the sum of their kernels (the reviewer found an exact NTK of half what its
    own finite networks give)."""
    spec = tn.serial(tn.Dense(), tn.FanOut(2), branches, tn.FanInSum(), tn.Dense())
    with pytest.raises(tn.ArchitectureError, match="no weights of their own since they split"):
        spec.kernels(X)
    spec.network(width=8, in_features=3)(X.float())      # the finite network itself is fine


def test_a_sum_with_one_weighted_branch_is_accepted():
    spec = tn.serial(tn.Dense(), tn.FanOut(2), tn.parallel(tn.serial(tn.ReLU(), tn.Dense()), tn.Identity()),
                     tn.FanInSum(), tn.ReLU(), tn.Dense())
    assert spec.ntk(X).shape == (5, 5)


def test_a_nonlinearity_after_a_concatenation_is_refused():
    """The channels of FanInConcat follow their own branch's covariance; a nonlinearity's kernel is
    not a function of their mean (the differential tests found the exact kernels 13-36 standard
    errors from Monte Carlo). A Dense layer, which averages over channels, may follow."""
    branches = tn.parallel(tn.serial(tn.Abs(), tn.Dense()), tn.Dense())
    refused = tn.serial(tn.Dense(), tn.FanOut(2), branches, tn.FanInConcat(), tn.ReLU(), tn.Dense())
    with pytest.raises(tn.ArchitectureError, match="concatenates branches.*put a Dense or Conv layer after"):
        refused.kernels(X)
    refused.network(width=8, in_features=3)(X.float())
    accepted = tn.serial(tn.Dense(), tn.FanOut(2), branches, tn.FanInConcat(), tn.Dense(), tn.ReLU(), tn.Dense())
    assert accepted.ntk(X).shape == (5, 5)


def test_branches_into_a_layer_that_takes_one_input_name_the_layer():
    """serial(Conv, FanOut(2), Flatten(), Dense()) crashed with AttributeError: 'tuple' object has
    no attribute 'flat'."""
    spec = tn.serial(tn.Conv(2), tn.FanOut(2), tn.Flatten(), tn.Dense())
    for call in (lambda: spec.kernels(torch.randn(2, 1, 4, 4)),
                 lambda: spec.network(width=4, input_shape=(1, 4, 4))):
        with pytest.raises(tn.ArchitectureError, match=r"layer 2 \(Flatten\(\)\).*branches of a FanOut.*FanInSum"):
            call()


def _nested(levels: int):
    spec = tn.mlp(2)
    for _ in range(levels - 1):
        spec = tn.serial(spec)
    return spec


def test_one_nesting_limit_for_building_saving_and_reading(tmp_path):
    """The deepest description allowed is saved as a model and as a store and reads back (a
    14-deep one could be saved but not read: the JSON reader allowed 32 levels, from_dict 64);
    one level more is refused when it is built."""
    deepest = _nested(base.MAX_NESTING)
    assert deepest.nesting() == base.MAX_NESTING
    x, y = np.random.default_rng(0).normal(size=(6, 3)), np.arange(6.0)
    model = KernelModel.fit(x, y, ModelSettings.with_spec(deepest)).save(tmp_path / "m")
    assert KernelModel.load(model).settings.spec().to_dict() == deepest.to_dict()
    k = kernel_matrix(deepest, torch.as_tensor(x), store=tmp_path / "k.zarr", tile=4, progress=False)
    np.testing.assert_array_equal(open_kernel_matrix(tmp_path / "k.zarr")[:, :], k[:, :])
    with pytest.raises(ValueError, match=f"nests serial / parallel {base.MAX_NESTING + 1} levels deep"):
        tn.serial(deepest)
    with pytest.raises(ValueError, match="parallel"):
        tn.parallel(_nested(base.MAX_NESTING))
    data = deepest.to_dict()
    data["network"] = {"layer": "serial", "layers": [data["network"]]}
    with pytest.raises(ValueError, match="nests deeper"):
        tn.from_dict(data)


def test_huge_counts_are_refused_before_any_work():
    with pytest.raises(tn.ArchitectureError, match="from 1 to 64"):
        tn.serial(tn.Dense(), tn.FanOut(1_000_000), tn.FanInConcat(), tn.Dense()).kernels(X)
    with pytest.raises(ValueError, match="nodes must be an integer from 2 to 512"):
        tn.mlp(2, tn.Activation(torch.tanh, nodes=10**9))
    with pytest.raises(ValueError, match="smaller widths"):
        tn.mlp(3).network(width=10**12)
    with pytest.raises(ValueError, match="as results alone.*out_features"):
        tn.mlp(2).ntk(X, out_features=10**5)
    with pytest.raises(ValueError, match="degree must be an integer from 1"):
        taylor_expand(tn.mlp(2).network(width=4, in_features=3), degree=12)


def test_a_kernel_whose_tiles_cannot_fit_is_refused_with_what_would(monkeypatch):
    """GlobalAvgPool needs the covariance of every pair of positions: on 96 x 96 images that is
    85 million entries per pair of inputs. When it cannot fit, the error says so before any work
    (and what would: smaller inputs, or a Flatten readout), not a raw allocator message."""
    monkeypatch.setattr(tiles, "device_memory", lambda device: 2**30)
    images = torch.randn(2, 1, 96, 96, dtype=torch.float64)
    gap = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    with pytest.raises(ValueError, match="every pair of positions.*Flatten readout"):
        gap.kernels(images)
    flat = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.Flatten(), tn.Dense())
    assert flat.nngp(images).shape == (2, 2)     # the same images, each position with itself only


def test_a_spec_file_with_named_arguments_gives_the_kernel_it_names(tmp_path):
    """Through --spec the reviewer's kernel came out 8.15 instead of 2.41: weight_std had been read
    as bias_std."""
    from cli_runner import run

    doc = {"format": "torchntk.spec", "version": 1, "network": {"layer": "serial", "layers": [
        {"weight_std": 2, "layer": "Dense"}, {"layer": "ReLU"}, {"layer": "Dense", "bias_std": 0.5}]}}
    (tmp_path / "spec.json").write_text(json.dumps(doc))
    np.save(tmp_path / "x.npy", X.numpy())
    result = run("kernel", tmp_path / "x.npy", "--spec", tmp_path / "spec.json", "-o", tmp_path / "K.npy", "-q",
                 "--no-standardize")
    assert result.exit_code == 0, result.output
    want = tn.serial(tn.Dense(weight_std=2), tn.ReLU(), tn.Dense(bias_std=0.5)).ntk(X).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "K.npy", allow_pickle=False), want, rtol=1e-12, atol=0)
