"""Shared by the hostile-input catalogue: every case ends in one clear error or a correct result."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from torchntk.cli import main


class Cli:
    """Runs the command line in-process and checks the outcome classes of the catalogue."""

    def run(self, *args):
        return CliRunner().invoke(main, [str(a) for a in args])

    def error(self, *args, match: str | tuple[str, ...] = ()) -> str:
        """The command fails with exactly one ``Error:`` line (containing each of ``match``), a
        non-zero exit code, and no traceback; returns that line."""
        result = self.run(*args)
        assert result.exit_code != 0, result.output
        assert isinstance(result.exception, SystemExit), repr(result.exception)  # click's clean exit
        assert "Traceback" not in result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, result.stderr
        for part in (match,) if isinstance(match, str) else match:
            assert part in errors[0], errors[0]
        return errors[0]

    def ok(self, *args):
        result = self.run(*args)
        assert result.exit_code == 0, result.output
        return result


@pytest.fixture
def cli() -> Cli:
    return Cli()


@pytest.fixture
def table(tmp_path):
    """A small CSV with a header (columns a, b, c, target y) and the same data as arrays."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(8, 4))
    path = tmp_path / "train.csv"
    lines = ["a,b,c,y"] + [",".join(f"{v:.17g}" for v in row) for row in values]
    path.write_text("\n".join(lines) + "\n")
    return path, values
