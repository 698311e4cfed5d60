"""The gallery scripts (docs/examples/*.py) run end to end at small sizes and draw their figure.

Each script's ``run(small=True, out=...)`` is what ``python docs/examples/NAME.py --small`` runs.
The numbers at these sizes are not meant to show anything; what is checked is that the script
runs against today's API and writes a non-empty PNG, so a gallery example that stops working
fails the suite.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch
from doc_blocks import REQUIREMENTS

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "docs" / "examples").glob("*.py"))
NEEDS: dict[str, str] = {}  # script name -> a REQUIREMENTS key, for scripts that need an optional part
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_gallery_script_runs_small_and_draws(script, tmp_path, monkeypatch):
    need = NEEDS.get(script.name)
    if need is not None:
        available, why = REQUIREMENTS[need]
        if not available():
            pytest.skip(why)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(sys, "argv", [str(script), "--small", "--out", str(tmp_path)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small sizes: one thread is as fast, and robust on a loaded machine
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    figures = list(tmp_path.glob("*.png"))
    assert len(figures) == 1, f"{script.name} should write one figure, wrote {figures}"
    assert figures[0].read_bytes()[:8] == PNG and figures[0].stat().st_size > 10_000


def test_every_gallery_script_is_on_the_gallery_page():
    page = (ROOT / "docs" / "examples" / "index.md").read_text()
    assert len(SCRIPTS) >= 4
    for script in SCRIPTS:
        assert script.name in page, f"docs/examples/index.md does not show {script.name}"
