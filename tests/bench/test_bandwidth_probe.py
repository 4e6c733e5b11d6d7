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


def test_bandwidth_is_a_positive_rate():
    bw = cb.stream_read_bandwidth(size_mb=8, repeats=2, threads=2)
    assert math.isfinite(bw) and bw > 1e8
