"""The benchmarks' streaming-read probe (bench/compile_bandwidth.py) reads every element, with any thread count."""

from __future__ import annotations

import ctypes
import math
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

import compile_bandwidth as cb  # noqa: E402


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_the_reader_sums_every_share(threads):
    lib = cb._library()  # pylint: disable=protected-access
    n = 128 * threads * 37
    arr, region = cb.huge_page_array(n * 4)
    try:
        arr[:] = np.arange(n, dtype=np.float32) % 7  # small integers: every partial sum is exact in float32
        seconds = ctypes.c_double()
        total = lib.spindle_stream_read_sum(arr.ctypes.data, n, threads, ctypes.byref(seconds))
        assert total == float(arr.astype(np.float64).sum())
        assert seconds.value > 0
    finally:
        del arr
        region.close()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_chunked_reader_sums_every_chunk_once(threads):
    """Alternate chunks (thread t: chunks t, t + threads, ...) cover the array exactly once: each element
    holds its chunk's number (mod 13), so a chunk read in place of another changes the sum."""
    lib = cb._library()  # pylint: disable=protected-access
    chunk = 256
    n = chunk * threads * 5
    arr, region = cb.huge_page_array(n * 4)
    try:
        arr[:] = (np.arange(n) // chunk % 13).astype(np.float32)  # a chunk's number mod 13, exact sums
        seconds = ctypes.c_double()
        total = lib.spindle_stream_read_chunks(arr.ctypes.data, n, threads, chunk, ctypes.byref(seconds))
        assert total == float(arr.astype(np.float64).sum())
        contiguous = lib.spindle_stream_read_chunks(arr.ctypes.data, n, threads, 0, ctypes.byref(seconds))
        assert contiguous == total
    finally:
        del arr
        region.close()


@pytest.mark.parametrize("layout", ["matrices", "alternating", "streams"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_step_segments_cover_the_step_once(layout, threads):
    """Each layout's segments cover every float of the step exactly once, each matrix split into equal parts
    by thread; "streams" gives each thread one contiguous region, "matrices" each matrix one range (thread 0
    its first part), "alternating" too with thread 0 on the last part of every other matrix."""
    sizes = [128 * threads * k for k in (3, 7, 2, 5)] * 2
    segs = cb.step_segments(sizes, threads, layout)
    assert segs.shape == (threads, len(sizes), 2)
    covered = np.zeros(sum(sizes), np.int32)
    for t in range(threads):
        for (off, length), size in zip(segs[t], sizes):
            assert length == size // threads
            covered[off:off + length] += 1
    assert (covered == 1).all()
    if layout == "streams":
        for t in range(threads):
            ends = segs[t, :-1, 0] + segs[t, :-1, 1]
            assert (ends == segs[t, 1:, 0]).all()  # one stream per thread
    else:
        starts = np.cumsum([0] + sizes[:-1])
        first = segs[0, :, 0] == starts
        assert first.all() if layout == "matrices" or threads == 1 else (first == (np.arange(len(sizes)) % 2 == 0)).all()
        if layout == "alternating" and threads == 2:  # thread 1 ends matrix i where its part of i + 1 begins
            assert segs[1, 0, 0] + segs[1, 0, 1] == segs[1, 1, 0]


@pytest.mark.parametrize("threads", [1, 2])
def test_the_segment_reader_sums_every_segment(threads):
    lib = cb._library()  # pylint: disable=protected-access
    sizes = [128 * threads * k for k in (2, 5, 3)] * 3
    n = sum(sizes)
    arr, region = cb.huge_page_array(n * 4)
    try:
        arr[:] = (np.arange(n) // 128 % 11).astype(np.float32)
        for layout in ("matrices", "alternating", "streams"):
            segs = np.ascontiguousarray(cb.step_segments(sizes, threads, layout))
            seconds = ctypes.c_double()
            total = lib.spindle_stream_read_segments(arr.ctypes.data, threads, segs.ctypes.data, len(sizes),
                                                     ctypes.byref(seconds))
            assert total == float(arr.astype(np.float64).sum()) and seconds.value > 0
    finally:
        del arr
        region.close()


def test_step_layouts_report_both_layouts_per_state():
    res = cb.step_layouts([64, 32], layers=2, rounds=3, fast_gbs=0.0, threads=2)
    assert res["slow"] == {} and set(res["fast"]) == {"contiguous", "matrices", "alternating", "streams"}
    # rates, not a speed check: a loaded machine may preempt one of the two readers for a while
    assert all(len(v) == 3 and all(math.isfinite(x) and x > 0 for x in v) for v in res["fast"].values())


def test_chunked_reads_report_ratios_per_state():
    res = cb.chunked_reads([64], rounds=2, fast_gbs=0.0, size_mb=16)  # every round counts as fast
    assert res["slow"] == {}
    assert len(res["fast"][0]) == 2 and all(bw > 0.1 for bw in res["fast"][0])
    assert len(res["fast"][64]) == 2 and all(0.05 < r < 20 for r in res["fast"][64])


def test_bandwidth_is_a_positive_rate():
    bw = cb.stream_read_bandwidth(size_mb=8, repeats=2, threads=2)
    assert math.isfinite(bw) and bw > 1e8
