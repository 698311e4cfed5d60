"""Dask: kernel tiles and kernel-matrix products computed by the workers of a cluster.

Assumption: the store directory is on a filesystem every worker and the driver can read and
write at the same path (one machine, NFS, a cluster's shared disk). Workers write each tile's
chunk into the store and make it durable; the driver then records it complete (store.py), so a
worker lost mid-tile leaves no marker and the tile is simply recomputed on the next run.

The inputs are scattered to the workers once; the network description travels with each task
(Dask serialises it; a user's activation callable must therefore be importable or picklable by
cloudpickle on the workers).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .store import KernelStore
from .tiles import compute_tile


@contextlib.contextmanager
def as_client(client: Any) -> Iterator[Any]:
    """A ``distributed.Client`` from a Client (used as is) or a scheduler address (connected here,
    closed afterwards)."""
    from distributed import Client

    if isinstance(client, Client):
        yield client
        return
    if isinstance(client, str):
        connected = Client(client)
        try:
            yield connected
        finally:
            connected.close()
        return
    raise TypeError(f"client must be a dask.distributed.Client or a scheduler address such as "
                    f"'tcp://host:8786', got {type(client).__name__}.")


def _slots(client: Any) -> int:
    """Threads across the cluster: tasks kept in flight so every thread has work (and no more,
    so memory and the work lost to a crash stay bounded)."""
    threads = sum(client.nthreads().values())
    return max(2 * threads, 2)


def _tile_task(spec: Any, x1: np.ndarray, x2: np.ndarray | None, path: str, manifest: dict, i: int,
               j: int, side1: dict | None = None, side2: dict | None = None) -> tuple[int, int, bytes]:
    """On a worker: compute tile (i, j), write it into the store and make it durable; returns
    (i, j, the checksums for its completion marker). side1 / side2: the side inputs of x1 and
    x2 by name, numpy arrays."""
    store = KernelStore(path, manifest)
    t1 = torch.from_numpy(x1)
    t2 = None if x2 is None else torch.from_numpy(x2)
    s1 = {name: torch.from_numpy(a) for name, a in (side1 or {}).items()}
    s2 = None if side2 is None else {name: torch.from_numpy(a) for name, a in side2.items()}
    blocks = compute_tile(spec, t1, t2, tuple(manifest["arrays"]), store.grid, i, j, s1, s2)
    return i, j, store.write_tile(i, j, blocks)


def _cluster_failures() -> tuple[type[BaseException], ...]:
    """The exceptions a future's result raises when the cluster, not the task, failed: its
    workers were lost (the task or its scattered inputs forgotten), killed, or cut off."""
    import asyncio
    from concurrent.futures import CancelledError

    from distributed import client, comm, scheduler

    found: list[type[BaseException]] = [CancelledError, asyncio.CancelledError]
    for module, name in ((client, "FutureCancelledError"), (scheduler, "KilledWorker"), (comm, "CommClosedError")):
        kind = getattr(module, name, None)
        if isinstance(kind, type):
            found.append(kind)
    return tuple(found)


def run_on_dask(client: Any, spec: Any, x1: Tensor, x2: Tensor | None, store: KernelStore,
                todo: list[tuple[int, int]], record: Callable[[int, int, bytes], None],
                side1: dict[str, Tensor] | None = None, side2: dict[str, Tensor] | None = None) -> None:
    """Compute the tiles ``todo`` on the cluster, recording each as its worker reports it durable.

    Raises:
        RuntimeError: the cluster failed (every worker lost, a worker killed, the connection
            closed); the tiles recorded before are kept and the message says how to resume.
    """
    from distributed import as_completed

    with as_client(client) as dask_client:
        inputs = [dask_client.scatter(t.detach().cpu().numpy(), broadcast=True) if t is not None else None
                  for t in (x1, x2)]
        sides = [None if s is None else {name: dask_client.scatter(t.detach().cpu().numpy(), broadcast=True)
                                         for name, t in s.items()} for s in (side1 or {}, side2)]
        queue = list(reversed(todo))
        path = str(store.path.resolve())
        run = uuid.uuid4().hex[:8]
        futures: set = set()

        def submit() -> Any:
            i, j = queue.pop()
            future = dask_client.submit(_tile_task, spec, inputs[0], inputs[1], path, store.manifest, i, j,
                                        sides[0], sides[1], pure=False, key=f"torchntk-tile-{i}-{j}-{run}")
            futures.add(future)
            return future

        running = as_completed([submit() for _ in range(min(_slots(dask_client), len(queue)))])
        recorded = 0
        try:
            for future in running:
                i, j, digests = future.result()
                futures.discard(future)
                record(i, j, digests)
                recorded += 1
                if queue:
                    running.add(submit())
        except _cluster_failures() as exc:
            for future in futures:
                future.cancel()
            raise RuntimeError(
                f"the Dask cluster failed after {recorded} of {len(todo)} tile(s) of this run ({type(exc).__name__}: "
                f"{exc}): its workers were lost or cut off. The finished tiles are kept in the kernel store "
                f"{path!r}; call kernel_matrix again with the same arguments to resume (with a client whose workers "
                "are up, or client=None to compute here).") from exc
        except BaseException:
            for future in futures:
                future.cancel()
            raise
