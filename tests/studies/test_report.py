"""The report writer: one self-contained HTML file, Markdown beside the figures, every number in JSON."""

import base64
import json

import numpy as np

from torchntk.studies.plots import new_figure, save
from torchntk.studies.report import write_report
from torchntk.studies.results import Claim, Figure, Section, Table, fmt


def _section(tmp_path):
    fig, axes = new_figure(3, 2)
    axes[0, 0].plot([0, 1], [0, 1])
    path = save(fig, tmp_path / "line.png")
    return Section("demo", "Demo <section>", ["Text with a < sign & more."], {"width": 1024},
                   [Claim("x -> 0", "-0.49 ± 0.03", "slope -0.5", "interval contains -0.5", "borne out")],
                   [Table("Numbers", ["width n", "value"], [[64, 0.123456789], [128, np.float64(2.5e-7)]], "a note")],
                   [Figure(path, "a line")], {"values": np.array([1.5, 2.5])})


def test_html_is_self_contained_and_escaped(tmp_path):
    paths = write_report([_section(tmp_path)], tmp_path, title="T", meta={"seed": 3})
    html = paths["html"].read_text(encoding="utf-8")
    png = base64.b64encode((tmp_path / "line.png").read_bytes()).decode("ascii")
    assert f"data:image/png;base64,{png}" in html          # the figure itself, not a link
    assert "Demo &lt;section&gt;" in html and "a &lt; sign &amp; more" in html
    assert "0.1235" in html and "2.5e-07" in html          # 4 significant digits
    assert html.count("borne out") >= 2                    # summary table and section table


def test_markdown_links_figures_and_json_keeps_raw_numbers(tmp_path):
    paths = write_report([_section(tmp_path)], tmp_path, title="T", meta={"seed": 3}, settings={"a": (1, 2)})
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "![line.png](line.png)" in md and "| 64 | 0.1235 |" in md and "**borne out**" in md
    payload = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert payload["meta"] == {"seed": 3} and payload["settings"] == {"a": [1, 2]}
    assert payload["sections"][0]["numbers"]["values"] == [1.5, 2.5]
    assert payload["claims"][0] == {"section": "demo", "statement": "x -> 0", "measured": "-0.49 ± 0.03",
                                    "theory": "slope -0.5", "criterion": "interval contains -0.5",
                                    "verdict": "borne out"}


def test_same_input_same_files(tmp_path):
    a = write_report([_section(tmp_path)], tmp_path / "a", title="T", meta={})
    b = write_report([_section(tmp_path)], tmp_path / "b", title="T", meta={})
    assert a["html"].read_text() == b["html"].read_text()
    assert a["markdown"].read_text() == b["markdown"].read_text()
    assert a["json"].read_text() == b["json"].read_text()


def test_fmt():
    assert fmt(10_000) == "10,000" and fmt(0.000123456) == "0.0001235" and fmt(True) == "yes" and fmt("x") == "x"


def test_html_renders_code_spans_as_code(tmp_path):
    section = Section("demo", "Demo", ["Run `torchntk reproduce --full` for the <settings>."], {}, [],
                      [Table("Numbers", ["n"], [[1]], "see `tn.mlp(3)`")], [], {})
    text = write_report([section], tmp_path, title="T", meta={},
                        intro=["`a < b` and a lone ` stays"])["html"].read_text(encoding="utf-8")
    assert "<code>torchntk reproduce --full</code> for the &lt;settings&gt;." in text
    assert "<code>tn.mlp(3)</code>" in text
    assert "<code>a &lt; b</code> and a lone ` stays" in text     # escaped inside code too; no span, no tag
    assert "`torchntk" not in text
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "`torchntk reproduce --full`" in md                     # Markdown keeps its own code spans
