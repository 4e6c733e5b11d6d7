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


def stream_read_bandwidth(size_mb: int = 256, repeats: int = 3, threads: int | None = None,
                          chunk_kb: int = 0) -> float:
    """Median bytes/s of reading a ``size_mb`` array (far larger than the caches) with ``threads`` threads
    (default: ``TVM_NUM_THREADS``, else the cores). ``chunk_kb``: the threads read alternate chunks of that
    many KB (thread t chunks t, t + threads, ...), as the fused decode blocks read each thread's half of
    one matrix after another, instead of a contiguous share each."""
    lib = _library()
    threads = threads or int(os.environ.get("TVM_NUM_THREADS", 0)) or os.cpu_count() or 1
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


def main(argv=None) -> None:
    import argparse  # pylint: disable=import-outside-toplevel
    import statistics  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", default="", metavar="KB,...",
                        help="also read in alternate chunks of these sizes (each thread's half of one matrix after "
                             "another) and print chunked / contiguous per state of the machine")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fast-gbs", type=float, default=45.0)
    args = parser.parse_args(argv)
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
