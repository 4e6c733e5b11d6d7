"""What one core's int8 kernels can compute against what it can stream: the batch-1 (and few-row) matmul of
the C kernels (``spindle_qmm_q4_1`` / ``spindle_qmm_q8_0``) on one thread, over weights that stay in the
core's L2 (the arithmetic alone) and over 256 MB of them (memory too), next to the streaming read of one
thread (``compile_bandwidth``).

A kernel whose L2 rate is not well above the streaming rate cannot hide its arithmetic behind the loads:
a decode step of such a format is bound by the vector units as much as by memory. SmolLM2's shapes by
default (K = 576, a layer's gate_up half: 1536 columns, about 540 KB in q4_1).

Usage:
  python bench/kernel_ceiling.py [--formats q4_1,q8_0] [--rows 1,8] [--columns 1536] [--rounds 7]
"""

from __future__ import annotations

import argparse
import ctypes
import pathlib
import statistics
import sys
import tempfile
import time

_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT / "service"), str(_ROOT / "bench")]

import numpy as np  # noqa: E402

from compile_bandwidth import huge_page_array, stream_read_bandwidth  # noqa: E402

K = 576
FORMATS = {"q4_1": 1, "q8_0": 0}  # the kernels' format codes


def tile_bytes(fmt: str, k: int) -> int:
    """Bytes of one 16-column tile of a `k`-input matrix (quantization.tiled_specs)."""
    from spindle.compiler.quantization import tiled_specs  # pylint: disable=import-outside-toplevel

    shape, dtype = tiled_specs(fmt, 16, k)["qweight"]
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


def kernels_library(out_dir: str) -> ctypes.CDLL:
    from spindle.compiler import kernels  # pylint: disable=import-outside-toplevel

    return ctypes.CDLL(str(kernels.shared_library(out_dir)))


def weights(fmt: str, tiles: int, k: int) -> tuple[np.ndarray, object]:
    """`tiles` tiles of random codes with small valid fp16 scales (and minimums), in 2 MB pages; keep the
    returned region alive as long as the array."""
    from spindle.compiler.quantization import TILE_Q4_1_WORDS, TILE_Q8_0_PAIR  # pylint: disable=import-outside-toplevel

    tb = tile_bytes(fmt, k)
    arr, region = huge_page_array(tiles * tb)
    raw = arr.view(np.uint8)[:tiles * tb].reshape(tiles, -1)
    rng = np.random.default_rng(0)
    raw[:] = rng.integers(0, 256, size=raw.shape, dtype=np.uint8)
    half = np.frombuffer(np.full(16, 0.01, np.float16).tobytes(), np.uint8)
    if fmt == "q4_1":  # per group: codes [0, 256), scales [256, 288), minimums [288, 320)
        groups = raw.reshape(tiles, -1, 4 * TILE_Q4_1_WORDS)
        groups[:, :, 256:288] = half
        groups[:, :, 288:320] = half
    else:  # per pair of groups: 2 x 512 of codes, then 2 x 32 of scales
        pairs = raw.reshape(tiles, -1, TILE_Q8_0_PAIR)
        pairs[:, :, 1024:1056] = half
        pairs[:, :, 1056:1088] = half
    return raw.reshape(-1), region


def rate(lib: ctypes.CDLL, fmt: str, w: np.ndarray, rows: int, k: int, min_seconds: float = 0.05) -> float:
    """Weight bytes per second of the kernel over all of `w` for `rows` activation rows (one thread)."""
    from spindle.compiler.kernels import act_row_bytes  # pylint: disable=import-outside-toplevel

    tiles = w.nbytes // tile_bytes(fmt, k)
    n = tiles * 16
    stride = act_row_bytes(k)
    x = np.random.default_rng(1).standard_normal((rows, k)).astype(np.float32)
    act = np.zeros((rows, stride), dtype=np.int8)
    for r in range(rows):
        lib.spindle_qact_quantize(x[r].ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(k),
                                  act[r].ctypes.data_as(ctypes.c_void_p), ctypes.c_int32(FORMATS[fmt]))
    y = np.zeros((rows, n), dtype=np.float32)
    fn = lib.spindle_qmm_q4_1 if fmt == "q4_1" else lib.spindle_qmm_q8_0
    args = (act.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(stride), ctypes.c_int64(rows),
            ctypes.c_void_p(w.ctypes.data), ctypes.c_int64(k), ctypes.c_int64(0), ctypes.c_int64(n),
            y.ctypes.data_as(ctypes.c_void_p), None, ctypes.c_int64(n))
    fn(*args)
    calls, t0 = 0, time.perf_counter()
    while True:
        fn(*args)
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return w.nbytes * calls / elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", default="q4_1,q8_0")
    parser.add_argument("--rows", default="1,8")
    parser.add_argument("--columns", type=int, default=1536, help="columns of the L2-resident matrix")
    parser.add_argument("--stream-mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    formats = args.formats.split(",")
    rows = [int(r) for r in args.rows.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        lib = kernels_library(tmp)
        cases = {}
        for fmt in formats:
            tiles = (args.columns + 15) // 16
            cases[(fmt, "L2")] = weights(fmt, tiles, K)
            big = args.stream_mb << 20
            cases[(fmt, "stream")] = weights(fmt, big // tile_bytes(fmt, K), K)
        results = {(fmt, where, r): [] for fmt in formats for where in ("L2", "stream") for r in rows}
        reader = []
        for _ in range(args.rounds):
            reader.append(stream_read_bandwidth(size_mb=args.stream_mb, repeats=1, threads=1))
            for (fmt, where, r), out in results.items():
                w = cases[(fmt, where)][0]
                out.append(rate(lib, fmt, w, r, K, min_seconds=0.05 if where == "L2" else 0.0))
    print(f"one thread, K = {K}, {args.rounds} rounds (median GB/s of weight bytes); one thread's streaming read "
          f"{statistics.median(reader) / 1e9:.1f} GB/s")
    print("| format | rows | from L2 | streamed | L2 / read |")
    print("|---|---|---|---|---|")
    for fmt in formats:
        for r in rows:
            l2 = statistics.median(results[(fmt, "L2", r)])
            st = statistics.median(results[(fmt, "stream", r)])
            print(f"| {fmt} | {r} | {l2 / 1e9:.1f} | {st / 1e9:.1f} | {l2 / statistics.median(reader):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
