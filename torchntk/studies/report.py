"""Write a run's sections as one self-contained HTML report, a Markdown report and results.json.

    write_report(sections, "report/", title="...", meta={...})
    # report/report.html  (figures embedded as base64 PNG: one file to share)
    # report/report.md    (the same text; figures linked beside it)
    # report/results.json (every number, for scripts and tests)

Nothing time-dependent goes in: the same run settings and seed give the same files.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from .._outputs import COMMENT, WRITER, check_replaceable
from .rates import BORNE_OUT, INCONCLUSIVE, NOT_BORNE_OUT
from .results import Claim, Section, fmt, jsonable

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
.borne { background: #dff3df; } .inconclusive { background: #fff4d6; } .not { background: #f8dada; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; } code { background: #f5f5f5; padding: 0 0.2em; }
.note { font-size: 0.9em; color: #555; }
"""

REPORT_FILES = ("report.html", "report.md", "results.json")
"""What `write_report` writes into its folder (besides the figures); a run checks before any
work that each is absent or torchntk's own (`torchntk._outputs.check_replaceable`)."""

_VERDICT_CLASS = {BORNE_OUT: "borne", INCONCLUSIVE: "inconclusive", NOT_BORNE_OUT: "not"}


def write_report(sections: list[Section], out: str | Path, *, title: str, meta: dict[str, Any],
                 intro: list[str] | None = None, settings: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write report.html, report.md and results.json into ``out`` (created if needed).

    Args:
        sections: the experiments' results, in report order.
        out: output folder; figures named in the sections should already be inside it.
        title: the report's heading.
        meta: run settings shown at the top (mode, seed, versions); no timings, so that the same
            seed gives the same report.
        intro: paragraphs under the title.
        settings: the full configuration, stored in results.json (sections show their own).

    Returns:
        {"html": path, "markdown": path, "json": path}.
    """
    from .. import __version__

    out = Path(out)
    check_replaceable(out, REPORT_FILES)
    out.mkdir(parents=True, exist_ok=True)
    intro = intro or []
    paths = {"html": out / "report.html", "markdown": out / "report.md", "json": out / "results.json"}
    paths["html"].write_text(_html(sections, title, meta, intro, out), encoding="utf-8")
    paths["markdown"].write_text(_markdown(sections, title, meta, intro, out), encoding="utf-8")
    payload = {"written_by": f"{WRITER} {__version__}", "title": title, "meta": jsonable(meta),
               "settings": jsonable(settings or {}),
               "claims": [_claim_dict(s, c) for s in sections for c in s.claims],
               "sections": [s.as_dict() for s in sections]}
    paths["json"].write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return paths


def _claim_dict(section: Section, claim: Claim) -> dict[str, str]:
    return {"section": section.key, "statement": claim.statement, "measured": claim.measured,
            "theory": claim.theory, "criterion": claim.criterion, "verdict": claim.verdict}


def _summary_rows(sections: list[Section]) -> list[tuple[str, Claim]]:
    return [(s.title, c) for s in sections for c in s.claims]


# -- HTML ---------------------------------------------------------------------------------

def _e(text: Any) -> str:
    return html.escape(str(text))


_CODE_SPAN = re.compile(r"`([^`]+)`")


def _prose(text: Any) -> str:
    """Escaped text with its Markdown code spans (`torchntk reproduce --full`) as <code> elements,
    so that the HTML shows the command and not the backticks around it."""
    return _CODE_SPAN.sub(lambda m: f"<code>{m.group(1)}</code>", _e(text))


def _html(sections, title, meta, intro, out: Path) -> str:
    parts = ["<!DOCTYPE html>", COMMENT, "<html lang='en'><head><meta charset='utf-8'>", f"<title>{_e(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{_e(title)}</h1>"]
    parts += [f"<p>{_prose(p)}</p>" for p in intro]
    parts.append(_html_table(["setting", "value"], [[k, fmt(v)] for k, v in meta.items()], text_columns=2))
    parts.append("<h2>Summary of claims</h2>")
    parts.append(_html_claims(_summary_rows(sections), with_section=True))
    for section in sections:
        parts.append(f"<h2 id='{_e(section.key)}'>{_e(section.title)}</h2>")
        parts += [f"<p>{_prose(p)}</p>" for p in section.text]
        if section.settings:
            parts.append("<details><summary>settings</summary>")
            parts.append(_html_table(["setting", "value"], [[k, fmt(v)] for k, v in section.settings.items()],
                                     text_columns=2))
            parts.append("</details>")
        if section.claims:
            parts.append(_html_claims([(section.title, c) for c in section.claims], with_section=False))
        for table in section.tables:
            parts.append(f"<h3>{_e(table.title)}</h3>")
            parts.append(_html_table(table.columns, [[fmt(v) for v in row] for row in table.rows], text_columns=1))
            if table.note:
                parts.append(f"<p class='note'>{_prose(table.note)}</p>")
        for figure in section.figures:
            data = base64.b64encode(Path(figure.path).read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{_e(figure.path.name)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption><b>{_e(figure.path.name)}</b>: {_prose(figure.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_table(columns: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    def cell(tag: str, i: int, value: str) -> str:
        cls = " class='text'" if i < text_columns else ""
        return f"<{tag}{cls}>{_e(value)}</{tag}>"
    head = "<tr>" + "".join(cell("th", i, c) for i, c in enumerate(columns)) + "</tr>"
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _html_claims(rows: list[tuple[str, Claim]], with_section: bool) -> str:
    columns = (["experiment"] if with_section else []) + ["claim", "measured", "theory", "criterion", "verdict"]
    head = "<tr>" + "".join(f"<th class='text'>{_e(c)}</th>" for c in columns) + "</tr>"
    body = []
    for section_title, claim in rows:
        cells = ([section_title] if with_section else []) + [claim.statement, claim.measured, claim.theory,
                                                            claim.criterion]
        tds = "".join(f"<td class='text'>{_prose(c)}</td>" for c in cells)
        css = _VERDICT_CLASS.get(claim.verdict, "")
        body.append(f"<tr>{tds}<td class='text {css}'><b>{_e(claim.verdict)}</b></td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


# -- Markdown -----------------------------------------------------------------------------

def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(_md_cell(c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _relative(path: Path, out: Path) -> str:
    """The figure's path as the Markdown file (in ``out``) should link it."""
    try:
        return Path(path).resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


def _markdown(sections, title, meta, intro, out: Path) -> str:
    parts = [COMMENT, f"# {title}", *intro, _md_table(["setting", "value"], [[k, fmt(v)] for k, v in meta.items()]),
             "## Summary of claims",
             _md_table(["experiment", "claim", "measured", "theory", "criterion", "verdict"],
                       [[t, c.statement, c.measured, c.theory, c.criterion, f"**{c.verdict}**"]
                        for t, c in _summary_rows(sections)])]
    for section in sections:
        parts.append(f"## {section.title}")
        parts += section.text
        if section.settings:
            parts.append(_md_table(["setting", "value"], [[k, fmt(v)] for k, v in section.settings.items()]))
        if section.claims:
            parts.append(_md_table(["claim", "measured", "theory", "criterion", "verdict"],
                                   [[c.statement, c.measured, c.theory, c.criterion, f"**{c.verdict}**"]
                                    for c in section.claims]))
        for table in section.tables:
            parts.append(f"### {table.title}")
            parts.append(_md_table(table.columns, [[fmt(v) for v in row] for row in table.rows]))
            if table.note:
                parts.append(f"_{table.note}_")
        for figure in section.figures:
            link = _relative(figure.path, out)
            parts.append(f"![{figure.path.name}]({link})\n\n*{figure.path.name}*: {figure.caption}")
    return "\n\n".join(parts) + "\n"
