"""The site's maths renders in a real browser with the network off.

A small site is built with the maths extensions of docs/conf.py (read from the file) and opened
in headless Chromium, with every host name made unresolvable, so that anything fetched from a CDN
fails. Every formula must have become MathJax's rendered markup (``mjx-container``), with no raw
``\\(`` left and no TeX error.

This needs Chromium (``apt-get install chromium``), which CI does not require: without it the
test is skipped and says so.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
                None)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (apt-get install chromium), "
                                                          "which CI does not require")

PAGE = r"""# Maths

With $a^{(0)}(x) = x$ and $\beta$,

$$
\tilde a^{(l+1)}(x) = \frac{\sigma_w}{\sqrt{n_l}}\, W^{(l)} a^{(l)}(x) + \beta\, b^{(l)},
\qquad \Theta_{kk'}(x, x') = \sum_p \frac{\partial f_k(x)}{\partial \theta_p}\,
\frac{\partial f_{k'}(x')}{\partial \theta_p}.
$$

```{eval-rst}
A docstring's role: :math:`\Theta^{(L)} \otimes \mathrm{Id}_{n_L}`, and a block:

.. math::

   \Sigma^{(l+1)}(x, x') = \sigma_w^2\, \mathbb E\big[\sigma(u)\, \sigma(v)\big] + \beta^2
```
"""


def _math_extensions() -> list[str]:
    """The extensions of docs/conf.py that render maths (read, not imported: importing it writes
    the command-line reference)."""
    for node in ast.parse((ROOT / "docs" / "conf.py").read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "extensions":
            extensions = [name for name in ast.literal_eval(node.value) if "math" in name]
            assert "sphinx.ext.mathjax" in extensions, extensions
            return extensions
    raise AssertionError("docs/conf.py sets no extensions")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    # The site's build tools come with the "docs" extra; without them there is nothing to look at.
    for module in ("sphinx", "myst_parser", "sphinx-mathjax-offline"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[docs]')")
    from sphinx.application import Sphinx

    source = tmp_path_factory.mktemp("source")
    (source / "conf.py").write_text(f"extensions = {[*_math_extensions(), 'myst_parser']!r}\n"
                                    "myst_enable_extensions = ['dollarmath']\n")
    (source / "index.md").write_text(PAGE)
    out = tmp_path_factory.mktemp("html")
    app = Sphinx(str(source), str(source), str(out), str(out / ".doctrees"), "html", status=None,
                 warningiserror=True, freshenv=True)
    app.build()
    return out


def test_the_maths_renders_offline(site, tmp_path):
    html = (site / "index.html").read_text()
    formulas = html.count('class="math notranslate nohighlight"')
    assert formulas == 5, "the page's two inline formulas, the display block, the role and the math block"

    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path}",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=20000", "--dump-dom",
         (site / "index.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    body = dom[dom.index("<body"):]
    assert len(re.findall(r"<mjx-container\b", body)) == formulas, "a formula was not rendered"
    assert "\\(" not in body and "\\[" not in body, "raw TeX left on the page"
    # A TeX syntax error is flagged data-mjx-error; an unknown macro is shown in red.
    for mark in ("<mjx-merror", "data-mjx-error", 'mathcolor="red"'):
        assert mark not in body, f"MathJax could not read a formula ({mark})"
