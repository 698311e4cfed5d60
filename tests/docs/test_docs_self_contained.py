"""The repository stands on its own: no file, docstring, report text or error message points to
anything outside it (design notes, notes on peer libraries, the development machine's paths).
Conventions are in docs/conventions.md; how to run neural-tangents beside the benchmarks is in
docs/benchmarks.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Built from pieces so that this file does not match itself.
FORBIDDEN = re.compile("|".join([
    re.escape("DESIGN" + ".md"),
    re.escape("../" + "shared"),
    re.escape("shared" + "/peers"),
    re.escape("shared" + "/paper"),
    re.escape("ntk-" + "appendix"),
    re.escape("/" + "work/"),
    re.escape("/" + "tmp/ntvenv"),
]))
SKIP_DIRS = {".git", ".venv", "nt-venv", "_build", "_generated", "__pycache__", "build", "dist", "report",
             ".pytest_cache", ".ruff_cache"}
TEXT_SUFFIXES = {".py", ".md", ".rst", ".txt", ".toml", ".cfg", ".ini", ".json", ".yml", ".yaml", ".html", ".css",
                 ".csv", ""}


def _files():
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") or part.endswith(".zarr") for part in relative.parts):
            continue
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            yield path


def test_no_file_refers_outside_the_repository():
    offenders = []
    for path in _files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if FORBIDDEN.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "references to files outside the repository (point to docs/conventions.md instead):\n" + \
        "\n".join(offenders)


def test_the_check_sees_the_package_and_the_ci_script():
    # Guards the walk itself: a broken skip list would make the test above pass on nothing.
    seen = {path.relative_to(ROOT).as_posix() for path in _files()}
    assert {"torchntk/__init__.py", "README.md", "docs/conventions.md", ".ci/run", "pyproject.toml"} <= seen


def test_the_pattern_catches_what_it_must():
    for text in ("see DESIGN" + ".md", "../" + "shared/x", "/" + "work/nt-venv/bin/python"):
        assert FORBIDDEN.search(text)
    assert not FORBIDDEN.search("nt-venv/bin/python and docs/conventions.md")
