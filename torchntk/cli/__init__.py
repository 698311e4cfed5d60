"""The ``torchntk`` command line. Each command lives in its own module and registers here."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="torchntk")
def main() -> None:
    """Neural Tangent Kernels in PyTorch: kernels, fits and the paper's experiments."""


# Commands (one module each; keep this list sorted):
from .kernel import kernel  # noqa: E402

main.add_command(kernel)
from .fit import fit, predict  # noqa: E402

main.add_command(fit)
main.add_command(predict)
from .reproduce import reproduce, study  # noqa: E402

main.add_command(reproduce)
main.add_command(study)
from .store import store  # noqa: E402

main.add_command(store)
