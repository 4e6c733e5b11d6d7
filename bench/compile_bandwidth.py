"""Streaming read bandwidth of this machine, measured with a TVM-compiled parallel vectorised sum.

The decode bound of a model is (weight bytes read per step) / (this bandwidth): the fastest a decode step
can go if it did nothing but stream its weights once from memory. The array is a TVM tensor (a copy of
the numpy one), which TVM's allocator holds in ordinary 4 KB pages, while the engine holds its weights in
2 MB pages (``PackInHugePages``). For this one forward read that makes no difference: the same sum over a
copy packed into 2 MB pages (``spindle.engine.pack_weights``), alternated with this one for 20 rounds,
measured 0.97x of it (39-49 GB/s both).
"""

from __future__ import annotations

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


def stream_read_bandwidth(target, size_mb: int = 512, repeats: int = 7) -> float:
    """Median bytes/s of summing a `size_mb` float32 array (far larger than the caches) with all threads."""
    chunks, lanes = 64, 64
    rows = size_mb * 1024 * 1024 // 4 // (chunks * lanes)
    f = _build(chunks, rows, lanes, target)
    a = tvm.runtime.tensor(np.ones((chunks, rows, lanes), np.float32))
    out = tvm.runtime.empty((chunks, lanes), "float32")
    f(a, out)
    if not np.allclose(out.numpy(), rows):
        raise RuntimeError("bandwidth kernel produced a wrong sum")
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, out)
        times.append(time.perf_counter() - t)
    return chunks * rows * lanes * 4 / float(np.median(times))
