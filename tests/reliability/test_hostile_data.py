"""Classes 3 and 7: data files. A second CSV's columns are matched by header name (or refused);
an overflowing standardisation is refused; every malformed file gets a message that says what it
really is (text named .npy, a non-zip .npz, a truncated file, a header claiming 10^12 elements)
and nothing is allocated from a lying header."""

from __future__ import annotations

import io

import numpy as np
import pytest

import torchntk as tn


def _csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in rows) + "\n")
    return path


def test_second_csv_is_matched_by_header_name(cli, tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    _csv(tmp_path / "a.csv", ["p", "q", "r"], a)
    _csv(tmp_path / "b.csv", ["r", "p", "q"], b[:, [2, 0, 1]])  # the same columns, another order
    cli.ok("kernel", tmp_path / "a.csv", tmp_path / "b.csv", "-o", tmp_path / "K.npy", "-q", "--no-standardize")
    # The same call of the library on the columns in a's order: the numbers must be identical.
    np.testing.assert_array_equal(np.load(tmp_path / "K.npy"), tn.mlp(3).ntk(a, b))


@pytest.mark.parametrize("header,match", [
    (["p", "q", "s"], ("lacks column(s) 'r'", "'s'")),
    (["p", "q"], "lacks column(s) 'r'"),
    (["p", "q", "r", "t"], "'t' not among"),
])
def test_second_csv_with_other_columns_is_refused(cli, tmp_path, header, match):
    _csv(tmp_path / "a.csv", ["p", "q", "r"], np.ones((2, 3)))
    _csv(tmp_path / "b.csv", header, np.ones((2, len(header))))
    cli.error("kernel", tmp_path / "a.csv", tmp_path / "b.csv", "-o", tmp_path / "K.npy", match=match)


@pytest.mark.parametrize("command", [["kernel", "--standardize"], ["fit", "--target", "y"]])
def test_overflowing_standardisation_is_refused(cli, tmp_path, command):
    _csv(tmp_path / "big.csv", ["a", "y"], [[1e200, 1.0], [-1e200, 2.0], [3.0, 0.0]])
    out = tmp_path / ("K.npy" if command[0] == "kernel" else "model")
    cli.error(command[0], tmp_path / "big.csv", *command[1:], "-o", out, "-q", match=("column 'a'", "rescale"))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _huge_header() -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (1_000_000, 1_000_000)})
    return buffer.getvalue() + b"\0" * 64     # 10^12 elements claimed, 64 bytes present


@pytest.mark.parametrize("name,content,match", [
    ("text.npy", b"a,b\n1,2\n", "is a text file, not a NumPy .npy array"),
    ("binary.npy", b"\x00\x01\x02\xff" * 8, "not a NumPy file"),
    ("empty.npy", b"", "empty"),
    ("trunc.npy", _npy_bytes(np.ones((4, 3)))[:-20], "truncated"),
    ("header.npy", _npy_bytes(np.ones((4, 3)))[:20], "header"),
    ("huge.npy", _huge_header(), "8,000,000,000,000 bytes"),
    ("object.npy", None, "without pickle"),
    ("text.npz", b"x,y\n1,2\n", "is not an .npz file"),
    ("empty.npz", b"PK\x05\x06" + b"\0" * 18, "holds no arrays"),
])
def test_malformed_array_files_say_what_they_are(cli, tmp_path, name, content, match):
    path = tmp_path / name
    if content is None:
        np.save(path, np.array([[{"x": 1}]], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(content)
    line = cli.error("kernel", path, "-o", tmp_path / "K.npy", match=match)
    assert "out of memory" not in line and ("pickled" not in line or name == "object.npy")


def test_npz_member_lying_about_its_size_is_refused(cli, tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as archive:
        archive.writestr("x.npy", _huge_header())
    cli.error("kernel", tmp_path / "lie.npz", "-o", tmp_path / "K.npy", match=("array 'x'", "truncated"))


def test_study_needs_two_rows_from_a_file(cli, tmp_path):
    _csv(tmp_path / "one.csv", ["a", "b"], [[1.0, 2.0]])
    cli.error("study", "--data", tmp_path / "one.csv", "--out", tmp_path / "st", "--quiet",
              match=("at least 2 points", "one.csv"))


def test_drop_may_name_a_column_only_the_first_file_has(cli, tmp_path):
    rng = np.random.default_rng(2)
    train, test = rng.normal(size=(5, 3)), rng.normal(size=(3, 2))
    _csv(tmp_path / "train.csv", ["p", "price", "q"], train)
    _csv(tmp_path / "test.csv", ["q", "p"], test)             # no price column, other order
    cli.ok("kernel", tmp_path / "train.csv", tmp_path / "test.csv", "--drop", "price", "-o", tmp_path / "K.npy", "-q",
           "--no-standardize")
    np.testing.assert_array_equal(np.load(tmp_path / "K.npy"), tn.mlp(3).ntk(train[:, [0, 2]], test[:, [1, 0]]))
    cli.error("kernel", tmp_path / "train.csv", tmp_path / "test.csv", "--drop", "cost", "-o", tmp_path / "K.npy",
              match=("--drop 'cost'", "neither"))
