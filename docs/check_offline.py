"""Check that a built HTML site loads nothing from outside itself, so that it reads the same with
no network: every script, stylesheet, font and image comes from the site's own files.

Usage::

    python docs/check_offline.py BUILD_DIR

It reads every ``.html``, ``.htm``, ``.svg`` and ``.css`` file under BUILD_DIR and reports, one
line each as ``FILE:LINE: WHAT URL``, every reference that a browser would fetch from outside the
site: a URL with a scheme (``https://``, ``http://``, ``file://``, ...) other than ``data:`` and
``blob:``, or a protocol-relative one (``//host/...``). What a browser fetches is

- in HTML: ``<script src>``, ``<link href>`` (stylesheets, icons, preloads; not ``rel`` values
  that only name a related page, such as ``canonical`` or ``next``), ``<img src/srcset>``,
  ``<source>``, ``<video>``, ``<audio>``, ``<track>``, ``<iframe>``, ``<embed>``, ``<object data>``,
  ``<input type=image src>``, SVG ``<image>``/``<use>``/``<feImage>`` ``href``, ``<base href>``,
  and CSS in ``<style>`` blocks and ``style`` attributes;
- in CSS: ``@import`` and ``url(...)`` (fonts, images, other stylesheets).

Links that a reader follows (``<a href>``) are not fetched and are not checked. Scripts' own
requests are not read here: a headless browser with the network off shows those (docs/testing.md).
Exit status: 0 when nothing is found, 1 when something is, 2 for a bad BUILD_DIR.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

# A scheme per RFC 3986; browsers drop leading spaces and control characters before parsing.
_LEADING_JUNK = "".join(chr(code) for code in range(33))
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
_LOCAL_SCHEMES = {"data", "blob", "about"}
# Attributes that make the browser fetch a resource, by element.
_FETCHED = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "video": ("src", "poster"),
    "audio": ("src",),
    "track": ("src",),
    "iframe": ("src",),
    "frame": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "input": ("src",),
    "base": ("href",),
    "image": ("href", "xlink:href"),
    "use": ("href", "xlink:href"),
    "feimage": ("href", "xlink:href"),
    "link": ("href", "imagesrcset"),
}
# <link rel=...> values that only name a related document: the browser fetches nothing for them.
_NAVIGATIONAL_RELS = {"alternate", "author", "bookmark", "canonical", "help", "index", "license", "next",
                      "prev", "previous", "search", "contents", "copyright", "first", "last", "up",
                      "me", "nofollow", "noopener", "noreferrer", "tag"}
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_CSS_URL = re.compile(r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^)"'\s]*))\s*\)""", re.I)
_CSS_IMPORT = re.compile(r"""@import\s+(?:"([^"]*)"|'([^']*)')""", re.I)


@dataclass(frozen=True)
class OutsideReference:
    """One reference to a resource outside the site: where it is (1-based line), what asks for
    it (``<script src>``, ``css url()``, ...) and the URL as written."""

    line: int
    what: str
    url: str


def is_outside(url: str) -> bool:
    """Whether a browser would fetch ``url`` from outside the site: protocol-relative (``//host``)
    or with a scheme other than ``data:``, ``blob:`` and ``about:``. Relative paths, ``#anchors``
    and ``?queries`` stay inside."""
    url = url.lstrip(_LEADING_JUNK)
    if url.startswith(("//", "\\\\", "/\\", "\\/")):
        return True
    scheme = _SCHEME.match(url)
    return scheme is not None and scheme.group(1).lower() not in _LOCAL_SCHEMES


def _srcset_urls(value: str) -> list[str]:
    # "a.png 1x, https://cdn/b.png 2x": each candidate is a URL and an optional descriptor.
    return [candidate.split()[0] for candidate in value.split(",") if candidate.split()]


def css_outside_references(text: str, *, first_line: int = 1, where: str = "css") -> list[OutsideReference]:
    """The outside references of a stylesheet: ``@import`` and ``url(...)``, comments ignored.

    Args:
        text: the CSS.
        first_line: the line of ``text``'s first character in its file (for CSS inside HTML).
        where: what to call the stylesheet in the report (``css``, ``<style>``, ``style=``).
    """
    # Blank out comments but keep their line breaks, so that line numbers stay right.
    text = _CSS_COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    found = []
    for pattern, kind in ((_CSS_IMPORT, "@import"), (_CSS_URL, "url()")):
        for match in pattern.finditer(text):
            url = next(group for group in match.groups() if group is not None)
            if is_outside(url):
                found.append(OutsideReference(first_line + text.count("\n", 0, match.start()), f"{where} {kind}", url))
    return sorted(found, key=lambda r: r.line)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[OutsideReference] = []
        self._style_start: int | None = None
        self._style: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line = self.getpos()[0]
        values = {name: value or "" for name, value in attrs}
        names = _FETCHED.get(tag, ())
        if tag == "link" and values.get("rel") and set(values["rel"].lower().split()) <= _NAVIGATIONAL_RELS:
            names = ()
        for name in names:
            if name not in values:
                continue
            urls = _srcset_urls(values[name]) if name.endswith("srcset") else [values[name]]
            self.found += [OutsideReference(line, f"<{tag} {name}>", url) for url in urls if is_outside(url)]
        if "style" in values:
            self.found += css_outside_references(values["style"], first_line=line, where=f"<{tag} style>")
        if tag == "style":
            self._style_start, self._style = line, []

    def handle_data(self, data: str) -> None:
        if self._style_start is not None:
            self._style.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style" and self._style_start is not None:
            self.found += css_outside_references("".join(self._style), first_line=self._style_start,
                                                 where="<style>")
            self._style_start = None


def html_outside_references(text: str) -> list[OutsideReference]:
    """The outside references of one HTML (or SVG) page, in the order they appear."""
    page = _Page()
    page.feed(text)
    page.close()
    return sorted(page.found, key=lambda r: r.line)


def check_site(root: Path) -> list[str]:
    """Every outside reference under the built site ``root``, as ``FILE:LINE: WHAT URL`` lines."""
    report = []
    for path in sorted(root.rglob("*")):
        suffix = path.suffix.lower()
        if not path.is_file() or suffix not in {".html", ".htm", ".svg", ".css"}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found = css_outside_references(text) if suffix == ".css" else html_outside_references(text)
        report += [f"{path.relative_to(root)}:{r.line}: {r.what} {r.url}" for r in found]
    return report


def main(argv: list[str] | None = None) -> int:
    """The command: check BUILD_DIR, print what loads from outside, exit 1 if anything does."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python docs/check_offline.py BUILD_DIR  (the folder sphinx -b html wrote)", file=sys.stderr)
        return 2
    root = Path(args[0])
    if not (root / "index.html").is_file():
        print(f"{root} is not a built HTML site (no index.html in it): build it first with "
              f"`python -m sphinx -b html docs {root}`.", file=sys.stderr)
        return 2
    report = check_site(root)
    if report:
        count = "1 reference loads" if len(report) == 1 else f"{len(report)} references load"
        print(f"{count} from outside the site; ship these files with the docs (in docs/_static or "
              "through an extension that bundles them) instead:", file=sys.stderr)
        print("\n".join(report), file=sys.stderr)
        return 1
    print(f"{root}: every page loads only the site's own files.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
