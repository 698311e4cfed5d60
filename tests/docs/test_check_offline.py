"""docs/check_offline.py, the check that the built site loads nothing from outside itself: a page
that loads only its own files passes, and each kind of outside reference it must catch fails."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs"))

from check_offline import (  # noqa: E402
    check_site,
    css_outside_references,
    html_outside_references,
    is_outside,
    main,
)

# What Sphinx and furo write, with the maths loaded from the site itself: nothing to report.
LOCAL_PAGE = """<!DOCTYPE html>
<html><head>
<link rel="index" title="Index" href="genindex.html">
<link rel="canonical" href="https://example.org/conventions.html">
<link rel="stylesheet" type="text/css" href="_static/styles/furo.css?v=1" />
<link rel="icon" href="_static/favicon.png">
<script src="_static/doctools.js?v=2"></script>
<script defer="defer" src="_static/mathjax/tex-chtml.js"></script>
<script>window.MathJax = {"tex": {"inlineMath": [["\\\\(", "\\\\)"]]}}</script>
<style>.a { background: url("data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg'/>"); }
       .b { background: url(../_images/b.png); } /* url(https://in.a.comment/x.png) */</style>
</head><body>
<a href="https://github.com/pradyunsg/furo">furo</a>
<img src="_images/figure.png" srcset="_images/figure.png 1x, _images/figure@2x.png 2x" alt="">
<span class="math notranslate nohighlight">\\(\\tilde a^{(l+1)}\\)</span>
<div style="background-image: url('#local')"></div>
</body></html>
"""

# One page per kind of outside reference, each inside an otherwise local page.
OUTSIDE = {
    "cdn script": '<script src="https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js"></script>',
    "protocol-relative script": '<script src="//cdn.example.org/x.js"></script>',
    "stylesheet": '<link rel="stylesheet" href="http://fonts.example.org/css?family=Roboto">',
    "preload": '<link rel="preload" as="font" href="https://fonts.example.org/a.woff2">',
    "image": '<img src="HTTPS://img.example.org/a.png" alt="">',
    "image srcset": '<img src="a.png" srcset="a.png 1x, https://img.example.org/a@2x.png 2x" alt="">',
    "iframe": '<iframe src="https://www.example.org/embed"></iframe>',
    "style block @import": '<style>@import "https://fonts.example.org/css";</style>',
    "style block url()": "<style>@font-face { src: url(https://fonts.example.org/a.woff2); }</style>",
    "style attribute url()": "<div style=\"background: url('//img.example.org/a.png')\"></div>",
    "file url": '<script src="file:///usr/share/javascript/mathjax/MathJax.js"></script>',
}


def _page(snippet: str) -> str:
    return LOCAL_PAGE.replace("</body>", snippet + "\n</body>")


def test_a_page_that_loads_only_its_own_files_passes():
    assert html_outside_references(LOCAL_PAGE) == []


@pytest.mark.parametrize("kind", sorted(OUTSIDE))
def test_each_kind_of_outside_reference_fails(kind):
    found = html_outside_references(_page(OUTSIDE[kind]))
    assert len(found) == 1, found
    assert found[0].line == LOCAL_PAGE.count("\n", 0, LOCAL_PAGE.index("</body>")) + 1
    assert found[0].url in OUTSIDE[kind]


def test_stylesheets_are_read_for_imports_and_urls_with_their_lines():
    css = ('/* @import "https://in.a.comment/"; */\n'
           '@import url("https://fonts.example.org/css");\n'
           ".a { src: url(data:font/woff2;base64,AAAA) }\n"
           ".b { src: url( 'https://fonts.example.org/b.woff' ) }\n")
    found = css_outside_references(css)
    assert [(r.line, r.url) for r in found] == [(2, "https://fonts.example.org/css"),
                                                 (4, "https://fonts.example.org/b.woff")]


@pytest.mark.parametrize(("url", "outside"), [
    ("_static/x.js", False), ("../index.html#top", False), ("/abs/path.css", False), ("?v=1", False),
    ("data:image/png;base64,AAAA", False), ("about:blank", False),
    ("https://x.org/a.js", True), ("http://x.org", True), (" //x.org/a.js", True), ("file:///a.js", True),
    ("ftp://x.org/a", True), ("\\\\x.org\\a.js", True),
])
def test_what_counts_as_outside(url, outside):
    assert is_outside(url) is outside


def test_the_command_checks_a_built_site(tmp_path, capsys):
    (tmp_path / "index.html").write_text(LOCAL_PAGE)
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "site.css").write_text("body { font: 1em serif; }")
    assert main([str(tmp_path)]) == 0
    assert check_site(tmp_path) == []

    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "page.html").write_text(_page(OUTSIDE["cdn script"]))
    (tmp_path / "_static" / "site.css").write_text('@import "https://fonts.example.org/css";')
    assert main([str(tmp_path)]) == 1
    report = capsys.readouterr().err
    assert "api/page.html:" in report and "cdn.jsdelivr.net" in report
    assert "_static/site.css:1: css @import https://fonts.example.org/css" in report


def test_the_command_says_what_is_wrong_with_its_argument(tmp_path, capsys):
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "not a built HTML site" in capsys.readouterr().err
