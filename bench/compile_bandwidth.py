"""Streaming read bandwidth of this machine: every core sums its share of a 256 MB array.

The decode bound of a model is (weight bytes read per step) / (this bandwidth): the fastest a decode step
can go if it did nothing but stream its weights once from memory. The reader (`native/stream_read.c`,
built here with the system C compiler) runs one thread per core (``TVM_NUM_THREADS``, as the model's
thread pool), each summing a contiguous share into 8 x 16 float lanes held in registers, over an array
in 2 MB pages as the engine's weights are (``PackInHugePages``).

An earlier version of this probe was a TVM-compiled parallel vectorised sum. Side by side with this reader
in the same minutes it read 23.6-27.8 GB/s where this one read 34-61 (this reader over the same memory in
TVM's 4 KB pages: 45-48; the TVM sum with its accumulators in a local buffer: 23-26), so it measured its
own loop more than the memory, and bounds computed from it were too lenient.

What the cores read still depends on where the host runs the two virtual cores, which changes every few
minutes (31-37 GB/s in some minutes, 57-66 in others; one core alone ~31).

Usage:
  python bench/compile_bandwidth.py [--rounds 5]
  python bench/compile_bandwidth.py --chunks 128,256,1024 --rounds 300   # stream restarts, per state
  python bench/compile_bandwidth.py --step-layouts 207,1106,553,346 --layers 30 --rounds 300   # a q4_1 step's reads
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import pathlib
import subprocess
import tempfile
import time

import numpy as np

SOURCE = pathlib.Path(__file__).resolve().parent / "native" / "stream_read.c"
_LIB: ctypes.CDLL | None = None


def _library() -> ctypes.CDLL:
    """The reader, compiled once per source version into the bench cache (``SPINDLE_BENCH_CACHE``)."""
    global _LIB  # pylint: disable=global-statement
    if _LIB is not None:
        return _LIB
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    cache = pathlib.Path(os.environ.get("SPINDLE_BENCH_CACHE", pathlib.Path.home() / ".cache" / "spindle-bench"))
    out = cache / f"stream_read-{digest}.so"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            built = pathlib.Path(tmp) / out.name
            cmd = [os.environ.get("CC", "cc"), "-O3", "-march=native", "-fPIC", "-shared", "-o", str(built),
                   str(SOURCE), "-lpthread"]
            subprocess.run(cmd, check=True)
            built.replace(out)
    lib = ctypes.CDLL(str(out))
    lib.spindle_stream_read_sum.restype = ctypes.c_double
    lib.spindle_stream_read_sum.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32,
                                            ctypes.POINTER(ctypes.c_double)]
    lib.spindle_stream_read_chunks.restype = ctypes.c_double
    lib.spindle_stream_read_chunks.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int64,
                                               ctypes.POINTER(ctypes.c_double)]
    lib.spindle_stream_read_segments.restype = ctypes.c_double
    lib.spindle_stream_read_segments.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64,
                                                 ctypes.POINTER(ctypes.c_double)]
    _LIB = lib
    return lib


def huge_page_array(nbytes: int) -> tuple[np.ndarray, mmap.mmap]:
    """A float32 array of ``nbytes`` in anonymous memory asked for in 2 MB pages, every page touched; keep
    the returned mmap alive as long as the array."""
    region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(region, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
        region.madvise(mmap.MADV_HUGEPAGE)
    arr = np.frombuffer(region, dtype=np.float32)
    arr[:] = 1.0
    return arr, region


def reader_threads(threads: int | None = None) -> int:
    """``threads``, else ``TVM_NUM_THREADS`` (as the model's thread pool), else the cores."""
    return threads or int(os.environ.get("TVM_NUM_THREADS", 0)) or os.cpu_count() or 1


def stream_read_bandwidth(size_mb: int = 256, repeats: int = 3, threads: int | None = None,
                          chunk_kb: int = 0) -> float:
    """Median bytes/s of reading a ``size_mb`` array (far larger than the caches) with ``threads`` threads
    (default: ``TVM_NUM_THREADS``, else the cores). ``chunk_kb``: the threads read alternate chunks of that
    many KB (thread t chunks t, t + threads, ...), as the fused decode blocks read each thread's half of
    one matrix after another, instead of a contiguous share each."""
    lib = _library()
    threads = reader_threads(threads)
    chunk = chunk_kb * 1024 // 4
    unit = max(128, chunk) * threads
    n = size_mb * 1024 * 1024 // 4 // unit * unit
    arr, region = huge_page_array(n * 4)
    try:
        seconds = ctypes.c_double()
        rates = []
        for _ in range(repeats + 1):  # the first read warms the page tables
            total = lib.spindle_stream_read_chunks(arr.ctypes.data, n, threads, chunk, ctypes.byref(seconds))
            if total != float(n):
                raise RuntimeError(f"the bandwidth reader summed {total}, expected {n}")
            rates.append(n * 4 / seconds.value)
        return float(np.median(rates[1:]))
    finally:
        del arr
        region.close()


def chunked_reads(chunks_kb: list[int], rounds: int, fast_gbs: float,
                  size_mb: int = 128) -> dict[str, dict[int, list[float]]]:
    """Per state of the machine ("fast": the contiguous read at ``fast_gbs`` GB/s or more): under key 0 the
    contiguous reads' GB/s, under each chunk size the ratios chunked / contiguous, of ``rounds`` rounds that
    each read the contiguous shares first."""
    out: dict[str, dict[int, list[float]]] = {"fast": {}, "slow": {}}
    for _ in range(rounds):
        whole = stream_read_bandwidth(size_mb, 1)
        state = "fast" if whole >= fast_gbs * 1e9 else "slow"
        out[state].setdefault(0, []).append(whole / 1e9)
        for kb in chunks_kb:
            out[state].setdefault(kb, []).append(stream_read_bandwidth(size_mb, 1, chunk_kb=kb) / whole)
    return out


def step_segments(sizes_floats: list[int], threads: int, layout: str) -> np.ndarray:
    """The (offset, length) float segments ``[threads, matrices, 2]`` each thread reads, matrix after matrix,
    when every matrix is cut into ``threads`` equal parts (each thread its own part, as the fused blocks
    split a matmul's tiles): ``"matrices"`` stores the matrices one after the other (a thread's parts are
    a matrix apart), ``"alternating"`` too, with the parts taken in reverse order every other matrix (as
    the int8 blocks take o_proj's and down's halves, so that one thread's part of a matrix ends where its
    part of the next begins), ``"streams"`` stores each thread's parts of all matrices one after the other
    (one region per thread), so that each thread reads one stream."""
    parts = [n // threads for n in sizes_floats]
    segs = np.zeros((threads, len(parts), 2), np.int64)
    total = sum(sizes_floats)
    for t in range(threads):
        matrix_start, own = 0, t * total // threads
        for i, part in enumerate(parts):
            if layout == "streams":
                segs[t, i] = (own, part)
            elif layout == "alternating":
                segs[t, i] = (matrix_start + (t if i % 2 == 0 else threads - 1 - t) * part, part)
            else:
                segs[t, i] = (matrix_start + t * part, part)
            matrix_start += sizes_floats[i]
            own += part
    return segs


def step_layouts(sizes_kb: list[int], layers: int, rounds: int, fast_gbs: float,
                 threads: int | None = None) -> dict[str, dict[str, list[float]]]:
    """A decode step's reads without the compute: ``layers`` times the matrices of ``sizes_kb``, each thread
    reading its part of one matrix after another with the threads meeting after each (`step_segments`), in
    each layout; per state of the machine (the contiguous read of a step's bytes at ``fast_gbs`` GB/s or
    more: "fast"), the GB/s of each round's contiguous read and of each layout. Every read takes the next
    of ``copies`` copies of the step's bytes, so that it streams from memory, not from the last read's
    cache."""
    lib = _library()
    threads = reader_threads(threads)
    unit = 128 * threads
    sizes = [max(unit, kb * 1024 // 4 // unit * unit) for kb in sizes_kb] * layers
    n = sum(sizes)
    copies = max(2, -(-4 * 32 * 2**20 // (n * 4)) + 1)  # the others' bytes at least 4x a 32 MB cache
    arr, region = huge_page_array(copies * n * 4)
    segs = {name: np.ascontiguousarray(step_segments(sizes, threads, name))
            for name in ("matrices", "streams", "alternating")}
    out: dict[str, dict[str, list[float]]] = {"fast": {}, "slow": {}}
    reads = 0

    def base() -> int:
        nonlocal reads
        reads += 1
        return arr.ctypes.data + (reads % copies) * n * 4

    try:
        seconds = ctypes.c_double()
        for r in range(rounds):
            lib.spindle_stream_read_chunks(base(), n, threads, 0, ctypes.byref(seconds))
            whole = n * 4 / seconds.value
            state = "fast" if whole >= fast_gbs * 1e9 else "slow"
            out[state].setdefault("contiguous", []).append(whole / 1e9)
            names = ("matrices", "alternating", "streams")
            for name in (names if r % 2 == 0 else reversed(names)):
                lib.spindle_stream_read_segments(base(), threads, segs[name].ctypes.data, len(sizes),
                                                 ctypes.byref(seconds))
                out[state].setdefault(name, []).append(n * 4 / seconds.value / 1e9)
    finally:
        del arr
        region.close()
    return out


def main(argv=None) -> None:
    import argparse  # pylint: disable=import-outside-toplevel
    import statistics  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", default="", metavar="KB,...",
                        help="also read in alternate chunks of these sizes (each thread's half of one matrix after "
                             "another) and print chunked / contiguous per state of the machine")
    parser.add_argument("--step-layouts", default="", metavar="KB,...",
                        help="a decode step's reads of --layers times these matrices (KB each), each thread its part "
                             "of one after another, the threads meeting after each: the matrices stored one after "
                             "the other (parts in order, or alternating) against each thread's parts stored as one "
                             "stream; GB/s per state")
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fast-gbs", type=float, default=45.0)
    args = parser.parse_args(argv)
    if args.step_layouts:
        res = step_layouts([int(k) for k in args.step_layouts.split(",")], args.layers, args.rounds, args.fast_gbs)
        print("| state | rounds | contiguous GB/s | matrices one after the other | ... halves alternating | each "
              "thread's parts as one stream | alternating / matrices | streams / matrices (per round) |")
        print("|---|---|---|---|---|---|---|---|")
        for state, per in res.items():
            if per:
                gains = [statistics.median(x / m for x, m in zip(per[name], per["matrices"]))
                         for name in ("alternating", "streams")]
                print(f"| {state} | {len(per['contiguous'])} | {statistics.median(per['contiguous']):.1f} | "
                      f"{statistics.median(per['matrices']):.1f} | {statistics.median(per['alternating']):.1f} | "
                      f"{statistics.median(per['streams']):.1f} | {gains[0]:.3f}x | {gains[1]:.3f}x |")
        return
    if not args.chunks:
        for _ in range(args.rounds):
            t = time.perf_counter()
            bw = stream_read_bandwidth()
            print(f"{bw / 1e9:.1f} GB/s ({time.perf_counter() - t:.2f} s)")
        return
    chunks = [int(c) for c in args.chunks.split(",")]
    res = chunked_reads(chunks, args.rounds, args.fast_gbs)
    print(f"| state | rounds | contiguous GB/s | {' | '.join(f'{kb} KB chunks / contiguous' for kb in chunks)} |")
    print("|---|---|---|" + "---|" * len(chunks))
    for state, per in res.items():
        if per:
            cells = [f"{statistics.median(per[kb]):.2f}" for kb in chunks]
            print(f"| {state} | {len(per[0])} | {statistics.median(per[0]):.1f} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
