"""warm_heap: after it, the tile walk's few-MiB temporaries reuse heap memory instead of
faulting in fresh pages (glibc's dynamic mmap threshold, torchntk/engine/heap.py).

Each case runs in a fresh interpreter, whose allocator has not yet seen a large block freed.
Ten rounds, as layers of a tile walk: each makes an output of 2 MiB that outlives the round
and eight 2 MiB temporaries that do not, all filled. Without help glibc returns freed memory
at the heap's top to the kernel and faults pages in again every round (about 40,000 faults
here, in some runs 12,000, as the heap's layout varies); after warm_heap they are reused
(about 5,000, the first rounds' pages). The bound of 15,000 stands three times above the
warm count; a cold run under it has nothing to show, and the test is skipped then.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

SCRIPT = r"""
import resource, sys, torch
from torchntk.engine.heap import warm_heap
if sys.argv[1] == "warm":
    warm_heap(torch.device("cpu"))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    output = torch.empty(2**18, dtype=torch.float64).fill_(1.0)
    temporaries = [torch.empty(2**18, dtype=torch.float64).fill_(1.0) for _ in range(8)]
    del temporaries
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

BOUND = 15_000

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the dynamic mmap threshold is glibc's")


def _faults(mode: str) -> int:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=env, check=True)
    return int(proc.stdout.split()[-1])


def test_temporaries_reuse_heap_memory_after_warm_heap():
    cold = _faults("cold")
    if cold < BOUND:
        pytest.skip(f"this allocator reuses the blocks without help ({cold} faults): nothing to compare")
    assert _faults("warm") < BOUND
