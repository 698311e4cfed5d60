"""The command line's test harness, shared by tests/cli: run a command in-process, and the
shape every user error must have."""

from __future__ import annotations

from click.testing import CliRunner, Result

from torchntk.cli import main


def run(*args) -> Result:
    """``torchntk ARGS...`` through click's runner (arguments may be paths or numbers)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result: Result, match: str, code: int = 1) -> None:
    """A user error: non-zero exit, no traceback, a single 'Error:' line naming the problem."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)  # click's clean exit, not an uncaught exception
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and match in errors[0], result.stderr
