import os
import sys

import pytest
import torch

# tests/ holds shared helpers (mp_reference) imported by test modules in subfolders.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def one_thread():
    """One torch thread for the test: on small tensors extra threads only add synchronisation (and
    stall on a busy machine). Modules of small-tensor tests use it for every test with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
