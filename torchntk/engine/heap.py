"""Keep the tile walk's temporaries in the C heap instead of fresh pages from the kernel.

A tile's kernel tensors are a few MiB each, and every layer frees some and allocates others.
glibc serves blocks above its mmap threshold (128 KiB at first) with fresh mappings and
returns the heap's free top to the kernel above its trim threshold, so such a walk keeps taking
new zeroed pages: on a transformer block of (100, 16, 32) sequences that was a third of the
time, all of it page faults. glibc raises both thresholds by itself when a mapped block is
freed (to its size, and twice its size: mallopt(3), "dynamic mmap threshold"); `warm_heap`
frees one such block, untouched, before the first walk, so later ones reuse heap memory. The
process then keeps up to twice `HINT_BYTES` of freed memory for reuse rather than returning it.
Other C libraries, and a process that set these thresholds itself, are unaffected.
"""

from __future__ import annotations

import torch

HINT_BYTES = 24 * 2**20
"""The block freed: above a few tiles' working set (`tiles.LIVE_TENSORS` tensors of
`tiles.TILE_BYTES`), below glibc's 32 MiB cap on the dynamic threshold."""

_done = False


def warm_heap(device: torch.device) -> None:
    """Allocate and free one `HINT_BYTES` block on the CPU, once per process (module docstring)."""
    global _done
    if _done or device.type != "cpu":
        return
    _done = True
    torch.empty(HINT_BYTES, dtype=torch.uint8)   # freed at once; its pages are never touched
