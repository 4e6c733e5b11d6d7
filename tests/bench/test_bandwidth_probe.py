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


def test_chunked_reads_report_ratios_per_state():
    res = cb.chunked_reads([64], rounds=2, fast_gbs=0.0, size_mb=16)  # every round counts as fast
    assert res["slow"] == {}
    assert len(res["fast"][0]) == 2 and all(bw > 0.1 for bw in res["fast"][0])
    assert len(res["fast"][64]) == 2 and all(0.05 < r < 20 for r in res["fast"][64])


def test_bandwidth_is_a_positive_rate():
    bw = cb.stream_read_bandwidth(size_mb=8, repeats=2, threads=2)
    assert math.isfinite(bw) and bw > 1e8
