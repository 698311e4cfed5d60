"""Reading users' files: the numbers come through exactly, and every bad file is one clear error."""

from __future__ import annotations

import click
import numpy as np
import pytest

from torchntk.cli.data import read_table, select_features


def write(path, text):
    path.write_text(text)
    return path


def test_csv_with_a_named_target(tmp_path):
    path = write(tmp_path / "t.csv", "a, b ,price,c\n1,2,3,4\n5,6.5,7e1,-8\n")
    table = read_table(path, target=["price"])
    np.testing.assert_array_equal(table.x, [[1, 2, 4], [5, 6.5, -8]])
    np.testing.assert_array_equal(table.y, [[3], [70]])
    assert table.feature_names == ("a", "b", "c") and table.target_names == ("price",) and table.named


def test_csv_several_targets_keep_their_order(tmp_path):
    path = write(tmp_path / "t.csv", "a,b,c\n1,2,3\n")
    table = read_table(path, target=["c", "a"])
    np.testing.assert_array_equal(table.y, [[3, 1]])
    assert table.target_names == ("c", "a")


def test_npy_target_by_column_index(tmp_path):
    data = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "d.npy", data)
    table = read_table(tmp_path / "d.npy", target=["-1"])
    np.testing.assert_array_equal(table.x, data[:, :2])
    np.testing.assert_array_equal(table.y, data[:, 2:])
    assert table.feature_names == ("0", "1") and table.target_names == ("2",) and not table.named


def test_npz_arrays_by_name(tmp_path):
    x, y = np.ones((5, 2)), np.arange(5.0)
    np.savez(tmp_path / "d.npz", features=x, y=y)
    table = read_table(tmp_path / "d.npz", target=["y"])  # the only other array is the features
    np.testing.assert_array_equal(table.x, x)
    np.testing.assert_array_equal(table.y, y[:, None])
    np.savez(tmp_path / "one.npz", only=x)
    np.testing.assert_array_equal(read_table(tmp_path / "one.npz").x, x)
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(click.ClickException, match="--array"):
        read_table(tmp_path / "two.npz")
    np.testing.assert_array_equal(read_table(tmp_path / "two.npz", array="b").x, x)


@pytest.mark.parametrize("text,match", [
    ("", "empty"),
    ("a,b\n", "no data rows"),
    ("a,b\n1,\n", "missing value in column 'b'"),
    ("a,b\n1,NA\n", "missing value"),
    ("a,b\n1,2\n3,nan\n", "missing value in column 'b' \\(data row 2"),
    ("a,city\n1,Paris\n", "column 'city' is not numeric"),
    ("a,b\n1,2,3\n", "data row 1 has 3 field"),
    ("a,a\n1,2\n", "duplicate column"),
    ("1,2\n3,4\n", "header row"),
    ("a,b\n1,inf\n", "infinite"),
])
def test_bad_csv_gives_one_clear_error(tmp_path, text, match):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(click.ClickException, match=match):
        read_table(path)


def test_unknown_target_names_the_columns(tmp_path):
    path = write(tmp_path / "t.csv", "a,b\n1,2\n")
    with pytest.raises(click.ClickException, match="no column named 'price'.*'a', 'b'"):
        read_table(path, target=["price"])
    np.save(tmp_path / "d.npy", np.ones((2, 2)))
    with pytest.raises(click.ClickException, match="column index"):
        read_table(tmp_path / "d.npy", target=["price"])
    with pytest.raises(click.ClickException, match="out of range"):
        read_table(tmp_path / "d.npy", target=["5"])
    with pytest.raises(click.ClickException, match="no feature columns"):
        read_table(path, target=["a", "b"])


@pytest.mark.parametrize("array,match", [
    (np.array([1.0, 2.0]), "must be 2-D"),
    (np.array([["a", "b"]]), "only numbers"),
    (np.zeros((0, 3)), "empty"),
    (np.array([[1.0, np.nan]]), "NaN"),
])
def test_bad_arrays(tmp_path, array, match):
    np.save(tmp_path / "d.npy", array)
    with pytest.raises(click.ClickException, match=match):
        read_table(tmp_path / "d.npy")


def test_pickled_and_foreign_files_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([[{"x": 1}]], dtype=object), allow_pickle=True)
    with pytest.raises(click.ClickException, match="without pickle"):
        read_table(tmp_path / "obj.npy")
    write(tmp_path / "fake.npz", "not a zip")
    with pytest.raises(click.ClickException, match="is not an .npz file"):
        read_table(tmp_path / "fake.npz")
    write(tmp_path / "data.xlsx", "x")
    with pytest.raises(click.ClickException, match="unsupported file type"):
        read_table(tmp_path / "data.xlsx")


def test_select_features_by_name_or_position(tmp_path):
    csv = read_table(write(tmp_path / "t.csv", "c,price,a,b\n3,9,1,2\n"))
    # By name, reordered to the model's order; the target column present in the file is ignored.
    np.testing.assert_array_equal(select_features(csv, ["a", "b", "c"], ["price"], "t.csv"), [[1, 2, 3]])
    with pytest.raises(click.ClickException, match="lacks column\\(s\\) 'd'"):
        select_features(csv, ["a", "b", "d"], ["price"], "t.csv")
    with pytest.raises(click.ClickException, match="'price' not among the model's columns"):
        select_features(csv, ["a", "b", "c"], [], "t.csv")
    np.save(tmp_path / "d.npy", np.array([[1.0, 2.0, 3.0]]))
    array = read_table(tmp_path / "d.npy")
    np.testing.assert_array_equal(select_features(array, ["a", "b", "c"], ["y"], "d.npy"), [[1, 2, 3]])
    # An array that still holds the target column it was fitted without (model from a .npy, target -1).
    np.testing.assert_array_equal(select_features(array, ["0", "1"], ["2"], "d.npy"), [[1, 2]])
    with pytest.raises(click.ClickException, match="do not match"):
        select_features(array, ["a", "b"], ["y"], "d.npy")
