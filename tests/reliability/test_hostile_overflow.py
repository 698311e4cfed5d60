"""Class 2: overflow and absurd sizes. Settings outside what is representable are refused when
the network is described; a kernel that still overflows raises KernelOverflowError naming the
cause (never a silent NaN, never "your data has NaN entries"); representable extremes give
correct numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import torchntk as tn
from torchntk._finite import MAX_DEPTH, KernelOverflowError, check_finite_kernels
from torchntk.model_io import KernelModel, ModelSettings


@pytest.mark.parametrize("build,error,match", [
    (lambda: tn.LeakyReLU(float("nan")), ValueError, "slope b"),
    (lambda: tn.PiecewiseLinear(float("inf"), 0.0), ValueError, "slope a"),
    (lambda: tn.PiecewiseLinear(1.0, -1e200), ValueError, "slope b"),
    (lambda: tn.PiecewiseLinear("1", 0.0), TypeError, "real number"),
    (lambda: tn.mlp(10**20), ValueError, f"<= {MAX_DEPTH}"),
    (lambda: tn.mlp(MAX_DEPTH + 1), ValueError, "depth"),
    (lambda: tn.mlp(2.5), TypeError, "integer"),
    (lambda: tn.mlp(2, bias_std=1e200), ValueError, "bias_std"),
    (lambda: tn.mlp(2, weight_std=1e155), ValueError, "weight_std"),
    (lambda: tn.mlp(2, weight_std=float("nan")), ValueError, "weight_std"),
    (lambda: tn.serial(tn.Dense(bias_std=torch.tensor(1e200, dtype=torch.float64))), ValueError, "bias_std"),
    (lambda: ModelSettings.mlp(depth=10**20).check(), ValueError, "depth"),
    (lambda: ModelSettings.mlp(bias_std=1e200).check(), ValueError, "bias_std"),
])
def test_unrepresentable_settings_are_refused(build, error, match):
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize("spec,x,dtype,cause", [
    (tn.mlp(3), np.full((3, 2), 1e160), torch.float64, "largest input entry is 1e+160"),
    (tn.mlp(3), np.full((3, 2), 1e308), torch.float64, "largest input entry"),
    (tn.mlp(3, "erf"), np.full((3, 2), 1e160), torch.float64, "largest input entry"),
    (tn.mlp(3, "tanh"), np.full((3, 2), 1e160), torch.float64, "largest input entry"),
    (tn.mlp(4, weight_std=1e100), np.ones((3, 2)), torch.float64, "weight_std^(2 depth)"),
    (tn.mlp(2000, weight_std=2.0), np.ones((3, 2)), torch.float64, "weight_std^(2 depth)"),
    (tn.mlp(30, bias_std=6e153), np.ones((3, 2)), torch.float64, "bias_std^2"),
    (tn.mlp(3), np.full((3, 2), 1e20), torch.float32, "float64"),
])
@pytest.mark.parametrize("call", ["kernels", "nngp", "ntk", "diagonal"])
def test_overflowing_kernels_raise_naming_the_cause(spec, x, dtype, cause, call):
    with pytest.raises(KernelOverflowError, match="overflowed") as info:
        if call == "diagonal":
            spec.nngp(x, diagonal=True, dtype=dtype)
        else:
            getattr(spec, call)(x, dtype=dtype)
    assert cause in str(info.value)
    assert isinstance(info.value, RuntimeError)


def test_large_but_representable_inputs_give_exact_numbers():
    # Depth 1 (an affine map): Sigma = weight_std^2 x.x'/n0 + bias_std^2 exactly, here 1e300 / 2 * 2.
    x = np.array([[1e150, 0.0], [0.0, 1e150]])
    nngp = tn.mlp(1, bias_std=0.0).nngp(x)
    np.testing.assert_allclose(nngp, [[5e299, 0.0], [0.0, 5e299]], rtol=1e-15)  # one rounding per entry
    assert np.isfinite(tn.mlp(50, weight_std=2 ** 0.5).ntk(np.ones((2, 3)))).all()
    # bias_std^2 = 1e300 stays representable: the correlations never form var1 * var2 (1e600).
    # Identical inputs: K(l+1) = K(l) / 2 + 1e300 and T(l+1) = T(l) / 2 + K(l+1) from K(1) = 1 + 1e300.
    nngp, ntk = tn.mlp(3, bias_std=1e150).kernels(np.ones((3, 2)))
    np.testing.assert_allclose(nngp, np.full((3, 3), 1.75e300), rtol=1e-15)
    np.testing.assert_allclose(ntk, np.full((3, 3), 2.75e300), rtol=1e-15)


def test_the_kernel_store_path_is_guarded_too(tmp_path):
    from torchntk.scale import kernel_matrix

    with pytest.raises(KernelOverflowError, match="largest input entry"):
        kernel_matrix(tn.mlp(3), np.full((4, 2), 1e160), store=tmp_path / "K.zarr", tile=2, dtype=torch.float64,
                      progress=False)


def test_a_fit_on_overflowing_settings_does_not_blame_the_data():
    x, y = np.ones((4, 2)) + np.eye(4, 2), np.arange(4.0)
    with pytest.raises(KernelOverflowError) as info:
        KernelModel.fit(x, y, ModelSettings.mlp(depth=2000, weight_std=2.0))
    assert "although the inputs are finite" in str(info.value) and "impute" not in str(info.value)


def test_cli_overflow_is_one_error_line(cli, tmp_path):
    np.save(tmp_path / "x.npy", np.full((3, 2), 1e160))
    # Unstandardised: standardising would scale the huge values down before the kernel.
    line = cli.error("kernel", tmp_path / "x.npy", "--no-standardize", "-o", tmp_path / "K.npy", "-q",
                     match="overflowed")
    # The data are finite: the message must not send the user to impute missing values.
    assert "although the inputs are finite" in line and "impute" not in line
    cli.error("kernel", tmp_path / "x.npy", "--depth", "2000", "--weight-std", "2", "-o", tmp_path / "K.npy", "-q",
              match="overflowed")
    assert not (tmp_path / "K.npy").exists()


def test_the_guard_skips_nothing_and_costs_no_mask():
    ok = torch.ones(3, 3)
    check_finite_kernels(ok, ok, "test")
    for bad in (math.inf, -math.inf, math.nan):
        k = torch.ones(3, 3)
        k[1, 2] = bad
        with pytest.raises(KernelOverflowError, match="1 inf or NaN entries of 9"):
            check_finite_kernels(ok, k, "test")
