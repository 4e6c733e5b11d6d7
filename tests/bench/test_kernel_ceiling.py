"""bench/kernel_ceiling.py times the C kernels over matrices it builds itself: those must be valid tiled
matrices (every scale and minimum where the layout keeps them), and the timing must run the kernel."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

import kernel_ceiling as kc  # noqa: E402

from spindle.compiler.quantization import dequantize, from_tiles, tiled_specs  # noqa: E402


@pytest.mark.parametrize("fmt", ["q4_1", "q8_0"])
def test_the_matrices_hold_their_scales_where_the_layout_keeps_them(fmt):
    tiles, k = 3, 96
    raw, _region = kc.weights(fmt, tiles, k)
    assert raw.nbytes == tiles * kc.tile_bytes(fmt, k)
    shape, dtype = tiled_specs(fmt, tiles * 16, k)["qweight"]
    arrays = from_tiles(fmt, {"qweight": raw.view(dtype).reshape(shape)}, tiles * 16, k)
    assert np.all(arrays["scales"] == np.float16(0.01))
    if fmt == "q4_1":
        assert np.all(arrays["mins"] == np.float16(0.01))
    assert np.isfinite(dequantize(fmt, arrays)).all()


def test_the_rate_runs_the_kernel(tmp_path):
    lib = kc.kernels_library(str(tmp_path))
    raw, _region = kc.weights("q4_1", 4, kc.K)
    assert 0 < kc.rate(lib, "q4_1", raw, 2, kc.K, min_seconds=0.0) < float("inf")
