"""`torchntk reproduce` and `torchntk study` end to end on tiny settings (--smoke): files written,
numbers in the report recomputed from scratch, the same seed giving the same report."""

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from studies.studies_reference import jacobian_ntk  # tests/ is on sys.path (tests/conftest.py)

from torchntk.cli import main
from torchntk.studies.config import derive_seed, smoke_settings
from torchntk.studies.data import load_data


def _run(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def sweep_reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        _run(["reproduce", "--smoke", "--only", "sweep", "--out", str(root / name), "--seed", str(seed), "--quiet"])
    return root


def _theorem1_row(markdown: str, width: int) -> list[str]:
    section = markdown.split("## Theorem 1")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith(f"| {width} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_report_files_are_written(sweep_reports):
    out = sweep_reports / "a"
    for name in ("report.html", "report.md", "results.json", "rates.png", "prop1_gaussian.png"):
        assert (out / name).stat().st_size > 1000, name
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 2  # both figures embedded
    payload = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert payload["meta"]["mode"] == "smoke" and payload["meta"]["seed"] == 0
    assert {c["verdict"] for c in payload["claims"]} <= {"borne out", "inconclusive", "not borne out"}


def test_report_numbers_are_recomputed_from_scratch(sweep_reports):
    markdown = (sweep_reports / "a" / "report.md").read_text(encoding="utf-8")
    settings = smoke_settings().sweep
    width = settings.widths[0]
    printed = float(_theorem1_row(markdown, width)[1])  # mean distance over seeds, 4 significant digits
    data = load_data(settings.data, settings.points, seed=derive_seed(0, "sweep-data"))
    spec = settings.network.spec()
    limit = spec.ntk(data.x)
    x = torch.as_tensor(data.x, dtype=torch.float32)
    distances = []
    for s in range(settings.seeds):
        net = spec.network(width=width, out_features=settings.out_features,
                           seed=derive_seed(0, "sweep", width, s), in_features=2)
        gram = jacobian_ntk(net, x, x).permute(0, 2, 1, 3).reshape(x.shape[0] * 2, -1).numpy()
        diff = gram - np.kron(limit, np.eye(2))
        distances.append(np.abs(np.linalg.eigvals(diff)).max() / x.shape[0])
    # The report prints 4 significant digits: agreement to 5e-4 relative (float32 kernels add ~1e-6).
    assert printed == pytest.approx(np.mean(distances), rel=5e-4)


def test_same_seed_same_report_and_another_seed_other_numbers(sweep_reports):
    a, b, c = (sweep_reports / name for name in "abc")
    assert (a / "report.md").read_text() == (b / "report.md").read_text()
    assert (a / "results.json").read_text() == (b / "results.json").read_text()
    width = smoke_settings().sweep.widths[0]
    row_a = _theorem1_row((a / "report.md").read_text(), width)
    row_c = _theorem1_row((c / "report.md").read_text(), width)
    assert row_a[1] != row_c[1]


def test_figures_of_the_paper_through_the_command_line(tmp_path):
    result = _run(["reproduce", "--smoke", "--only", "fig1,fig2", "--out", str(tmp_path), "--workers", "1",
                   "--threads", "1"])
    assert (tmp_path / "fig1_ntk.png").exists() and (tmp_path / "fig2_regression.png").exists()
    assert "Report:" in result.output
    # stderr is not a terminal here, as in `reproduce --full > log 2>&1`: a line per step, not bars.
    lines = result.stderr.splitlines()
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d Figure 1.*: started, \d+ to do", line) for line in lines)
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d Figure 2.*: (\d+)/\1 done, \d+:\d\d:\d\d elapsed", line)
               for line in lines), result.stderr
    payload = json.loads((tmp_path / "results.json").read_text())
    assert [s["key"] for s in payload["sections"]] == ["fig1", "fig2"]
    # The Figure 2 table's coverage is the mean of the per-initialization coverages stored beside it.
    fig2 = payload["sections"][1]
    assert fig2["tables"][0]["rows"][1][1] == pytest.approx(np.mean(fig2["numbers"]["coverage"]["64"]))


def test_worker_processes_give_the_same_numbers(sweep_reports, tmp_path):
    _run(["reproduce", "--smoke", "--only", "fig2,sweep", "--workers", "2", "--out", str(tmp_path), "--quiet"])
    parallel = json.loads((tmp_path / "results.json").read_text())
    serial = json.loads((sweep_reports / "a" / "results.json").read_text())
    assert [s["key"] for s in parallel["sections"]][0] == "fig2"
    by_key = {s["key"]: s for s in parallel["sections"]}
    for section in serial["sections"]:
        if section["key"] in ("theorem1", "theorem2"):
            # Same seeds, one thread per worker as in the serial run: the same float32 arithmetic.
            assert np.allclose(by_key[section["key"]]["numbers"]["fit"]["slope"], section["numbers"]["fit"]["slope"],
                               rtol=1e-6)


def test_study_on_a_csv_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3))
    path = tmp_path / "data.csv"
    np.savetxt(path, np.column_stack([x, np.sin(x[:, 0])]), delimiter=",", header="a,b,c,y", comments="")
    out = tmp_path / "study"
    _run(["study", "--depth", "3", "--activation", "tanh", "--widths", "8,16,32", "--seeds", "2",
          "--gaussian-seeds", "4", "--steps", "3", "--record-every", "1", "--points", "6", "--data", str(path),
          "--target", "y", "--out", str(out), "--quiet"])
    payload = json.loads((out / "results.json").read_text())
    assert payload["meta"]["mode"] == "study"
    assert payload["settings"]["network"]["activation"] == "tanh" and payload["settings"]["widths"] == [8, 16, 32]
    assert "6 rows of data.csv" in (out / "report.md").read_text()
    assert (out / "rates.png").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["study", "--widths", "8,16"], "at least three distinct"),
    (["study", "--widths", "a,b"], "integers"),
    (["study", "--data", "nowhere.csv"], "no such file"),
    (["study", "--target", "y"], "--target"),
    (["reproduce", "--full", "--smoke"], "exclude"),
    (["reproduce", "--only", "fig9"], "choose among"),
])
def test_bad_options_give_one_line_errors(args, message, tmp_path):
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert re.search(re.escape(message), result.output), result.output
