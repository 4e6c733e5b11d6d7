"""Streaming read bandwidth of this machine, measured with a TVM-compiled parallel vectorised sum.

The decode bound of a model is (weight bytes read per step) / (this bandwidth): the fastest a decode step
can go if it did nothing but stream its weights once from memory. The array is a TVM tensor (a copy of
the numpy one), which TVM's allocator holds in ordinary 4 KB pages, while the engine holds its weights in
2 MB pages (``PackInHugePages``). For this one forward read that makes no difference: the same sum over a
copy packed into 2 MB pages (``spindle.engine.pack_weights``), alternated with this one for 20 rounds,
measured 0.97x of it (39-49 GB/s both).

What the sum reads depends on where the host runs the two virtual cores, which changes every few
minutes: ~30-34 GB/s, about what one core reads alone (~27), or ~48-56 GB/s, twice that. The fused decode
blocks see the same two states from the inside: a hand-off of a row from one thread to the other takes
~0.4 us in the first and ~2.3 us in the second, as if the two cores shared their caches in the first state
and none in the second (docs/performance.md, "Fewer waits in the fused blocks").
"""

from __future__ import annotations

import contextlib
import glob
import os
import threading
import time

import numpy as np
import tvm
from tvm import s_tir, te


def _build(chunks: int, rows: int, lanes: int, target):
    a = te.placeholder((chunks, rows, lanes), "float32", name="a")
    j = te.reduce_axis((0, rows), name="j")
    out = te.compute((chunks, lanes), lambda c, l: te.sum(a[c, j, l], axis=j), name="out")
    sch = s_tir.Schedule(te.create_prim_func([a, out]))
    blk = sch.get_sblock("out")
    c, l, j = sch.get_loops(blk)
    sch.reorder(c, j, l)
    sch.parallel(c)
    sch.vectorize(l)
    sch.decompose_reduction(blk, j)
    return tvm.compile(sch.mod, target=target)


def _worker_cores() -> set[int]:
    """The cores TVM's pool workers of this process are pinned to (each to one core)."""
    cores: set[int] = set()
    me = threading.get_native_id()
    for task in glob.glob(f"/proc/{os.getpid()}/task/*"):
        tid = int(os.path.basename(task))
        if tid == me:
            continue
        try:
            allowed = os.sched_getaffinity(tid)
        except OSError:
            continue
        if len(allowed) == 1:
            cores |= allowed
    return cores


@contextlib.contextmanager
def off_worker_cores():
    """Keep the calling thread off the cores TVM's workers are pinned to while the block runs.

    TVM pins its pool's workers one per core and leaves the calling thread, which runs a parallel loop's
    first share itself, free to run anywhere. Now and then the OS leaves it on a worker's core for a whole
    measurement: the two halves of every loop then share one core, and the sum below reads what one core
    reads (~26 GB/s; pinned there on purpose it read 23-26 where the two cores read 50-53). Pinning it to
    the remaining cores makes the reading the machine's, not the placement's."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    free = before - _worker_cores()
    if not free or free == before:
        yield
        return
    os.sched_setaffinity(0, free)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def stream_read_bandwidth(target, size_mb: int = 512, repeats: int = 7) -> float:
    """Median bytes/s of summing a `size_mb` float32 array (far larger than the caches) with all threads."""
    chunks, lanes = 64, 64
    rows = size_mb * 1024 * 1024 // 4 // (chunks * lanes)
    f = _build(chunks, rows, lanes, target)
    a = tvm.runtime.tensor(np.ones((chunks, rows, lanes), np.float32))
    out = tvm.runtime.empty((chunks, lanes), "float32")
    f(a, out)  # starts the pool's workers
    if not np.allclose(out.numpy(), rows):
        raise RuntimeError("bandwidth kernel produced a wrong sum")
    times = []
    with off_worker_cores():
        for _ in range(repeats):
            t = time.perf_counter()
            f(a, out)
            times.append(time.perf_counter() - t)
    return chunks * rows * lanes * 4 / float(np.median(times))
