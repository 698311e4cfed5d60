"""Every example in README.md and in the guides (docs/**/*.md) runs: see doc_blocks.py for what
counts as an example and which blocks are deliberately not run.

Each document's blocks run in order, in one namespace, in a fresh temporary directory, so a page
reads as one session. The examples are written at small sizes, so the whole set takes seconds.
"""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from doc_blocks import LANGUAGES, NOT_RUN, REQUIREMENTS, ROOT, Block, blocks, commands, documents

from torchntk.cli import main

DOCUMENTS = documents()
PENDING = [b for d in DOCUMENTS for b in blocks(d) if b.requires]


def _run(block: Block, namespace: dict) -> None:
    if block.language == "python":
        exec(compile(block.code, block.name, "exec"), namespace)  # noqa: S102 - our own documents
    elif block.language == "console":
        for args in commands(block):
            result = CliRunner().invoke(main, args, catch_exceptions=False)
            assert result.exit_code == 0, f"{block.name}: `torchntk {' '.join(args)}` failed:\n{result.output}"


@pytest.fixture
def session(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    torch.manual_seed(0)
    # The examples are small: one thread is as fast, and far faster on a machine other jobs load.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {"__name__": "__doc__"}
    torch.set_num_threads(threads)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_document_examples_run(document, session):
    found = blocks(document)
    for block in found:
        assert block.language in LANGUAGES, f"{block.name}: fence language {block.language!r} is not one of " \
                                            f"{sorted(LANGUAGES)} (say python, console, text or sh)"
        if block.requires:
            assert block.requires in REQUIREMENTS, f"{block.name}: unknown requirement {block.requires!r}"
            continue
        _run(block, session)


@pytest.mark.parametrize("block", PENDING, ids=lambda b: b.name)
def test_examples_that_need_an_optional_part_run(block, session):
    available, why = REQUIREMENTS[block.requires]
    if not available():
        pytest.skip(why)
    _run(block, session)


def test_blocks_that_are_not_run_are_only_installs_benchmarks_and_long_runs():
    for document in DOCUMENTS:
        for block in blocks(document):
            if block.language == "sh":
                for line in block.code.splitlines():
                    assert NOT_RUN.match(line), f"{block.name}: {line!r} is in a ```sh block, which the tests do " \
                                                "not run; make it a ```console or ```python example"


def test_there_are_examples_to_run():
    # Guards the parser: if the fence pattern broke, every test above would pass on nothing.
    runnable = [b for d in DOCUMENTS for b in blocks(d) if b.language in ("python", "console")]
    assert len(runnable) >= 20


README_BLOCKS = [b for b in blocks(ROOT / "README.md") if b.language in ("python", "console") and not b.requires]


def _alone(block: Block) -> list[Block]:
    """The block, and for a command-line session the Python block before it, which writes its files."""
    if block.language == "python":
        return [block]
    index = README_BLOCKS.index(block)
    before = README_BLOCKS[index - 1] if index else None
    assert before is not None and before.language == "python", f"{block.name}: a console block in README follows " \
                                                                "the Python block that writes its data files"
    return [before, block]


@pytest.mark.parametrize("block", README_BLOCKS, ids=lambda b: b.name)
def test_each_readme_example_runs_on_its_own(block, tmp_path, monkeypatch):
    # A reader copies one block, not the page: each one imports and makes what it uses.
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__doc__"}
    for part in _alone(block):
        _run(part, namespace)


def test_the_readme_runs_twice_in_the_same_folder(session):
    # Seeded data: a rerun finds the same inputs, so the kernel store resumes instead of refusing
    # a store of other data, and the CLI's outputs are overwritten by the same results.
    for _ in range(2):
        for block in README_BLOCKS:
            _run(block, session)
