"""The code blocks of the Markdown documents (README.md, docs/**/*.md), and how to run them.

A document's examples are its fenced blocks, run in order in one namespace per document:

- ```python blocks are executed (in a temporary working directory);
- ```console blocks are command-line sessions: each line ``$ torchntk ...`` is run (through
  click's test runner, in the same directory) and must exit 0; other lines are shown output;
- ```text blocks are output or layouts, not code;
- ```sh blocks are commands that are not run by the tests, and each line must match
  ``NOT_RUN``: installs, benchmarks (minutes to hours each) and the multi-minute
  `torchntk reproduce` runs, which tests/cli/test_reproduce.py covers at small settings.

A block preceded by ``<!-- requires: NAME -->`` needs an optional dependency that may not be
installed (``REQUIREMENTS``); it must be self-contained and runs in its own test, which says it
was skipped, and why, where that dependency is missing.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^(`{3,})([^\n]*)\n(.*?)^\1[ \t]*$", re.S | re.M)
REQUIRES = re.compile(r"<!--\s*requires:\s*([\w.-]+)\s*-->\s*$")
LANGUAGES = {"python", "console", "text", "sh"}
# MyST directives in fences ({toctree}, {note}) are not code; code must not hide in directives.
# (literalinclude is allowed: it shows the gallery scripts, which tests/docs/test_docs_gallery.py runs.)
CODE_DIRECTIVES = ("{code-block}", "{code}", "{sourcecode}", "{eval-rst}")

NOT_RUN = re.compile(
    r"^\s*(#.*"
    r"|python3 -m venv .*"
    r"|((\.venv|nt-venv)/bin/)?pip install .*"
    r"|(\S+=\S+ )*(\.venv/bin/)?torchntk (reproduce|study)( .*)?"
    r"|(\S+=\S+ )*(\.venv/bin/)?python (benchmarks/\S+\.py|-m sphinx|-m pytest)( .*)?"
    r"|/usr/bin/time -v (\.venv/bin/)?torchntk reproduce( .*)?"
    r"|)$")


def _has_gpytorch() -> bool:
    ours = (ROOT / "torchntk" / "gpytorch").exists() or (ROOT / "torchntk" / "gpytorch.py").exists()
    return ours and importlib.util.find_spec("gpytorch") is not None


REQUIREMENTS = {
    "gpytorch": (_has_gpytorch, "gpytorch or torchntk.gpytorch is not installed"),
}


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    language: str
    code: str
    requires: str | None

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks(document: Path) -> list[Block]:
    text = document.read_text()
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = REQUIRES.search(before)
        info = match.group(2).strip()
        if info.startswith(CODE_DIRECTIVES):
            raise AssertionError(f"{document.relative_to(ROOT)}:{line}: write code as a plain ```python fence, "
                                 f"not {info.split()[0]}, so that the tests run it")
        if info.startswith("{"):
            continue  # a directive (toctree, note, ...)
        language = info.split()[0] if info else ""
        found.append(Block(document, line, language, match.group(3), marker.group(1) if marker else None))
    return found


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def commands(block: Block) -> list[list[str]]:
    """The ``torchntk`` command lines of a console block, as argument lists (without the name)."""
    out = []
    for raw in block.code.splitlines():
        if not raw.startswith("$ "):
            continue
        words = shlex.split(raw[2:], comments=True)
        if not words or words[0] != "torchntk":
            raise AssertionError(f"{block.name}: console blocks run only `torchntk` commands, got {raw!r}")
        out.append(words[1:])
    return out
