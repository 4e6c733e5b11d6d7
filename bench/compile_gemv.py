"""Quantized matmul speed inside a real Relax-built library, float against int8 kernels, vs the bandwidth.

Each case is one `QuantizedLinear` compiled with Spindle's CPU pipeline, once with the float kernel
(weights dequantized in registers, float32 activations) and once with the int8 kernel (activations
quantized to int8 per group of 32, integer dot products), called with `rows` rows (1: batch-1 decode,
8: a batch-8 decode step), cycling over copies of the weights (at least --min-mb MB of them, beyond the 32 MB L3, in
2 MB pages as the engine holds them) so that every call streams them from memory (as a decode step does). All cases and the streaming read bandwidth are timed in alternating
rounds, so that every case sees the same machine load. Prints medians of weights/s, weight bytes/s, the
ratio to the bandwidth (1.00 = at the bandwidth) and int8 / float per shape.

Usage:
  TVM_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1 python bench/compile_gemv.py [--dtypes q8_0,q4_1]
      [--shapes 768x2048,2048x768,768x32000,576x1536,1536x576,576x49152] [--rows 1,8]
      [--kernels float,int8] [--copies 6] [--min-mb 96] [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT / "service"), str(_ROOT / "bench")]

import numpy as np  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402
from tvm.relax.frontend import nn  # noqa: E402

from compile_bandwidth import stream_read_bandwidth  # noqa: E402
from spindle.compiler import quantization as Q  # noqa: E402
from spindle.compiler.build import make_target  # noqa: E402
from spindle.compiler.runner import pack_weights  # noqa: E402
from spindle.compiler.schedules import cpu_pipeline  # noqa: E402


class _Gemv(nn.Module):
    def __init__(self, k: int, n: int, fmt: str, kernel: str):
        super().__init__()
        self.linear = Q.QuantizedLinear(k, n, fmt, kernel=kernel)

    def forward(self, x: nn.Tensor):  # pylint: disable=arguments-differ
        return self.linear(x)


def build(fmt: str, k: int, n: int, kernel: str, target):
    model = _Gemv(k, n, fmt, kernel)
    spec = {"forward": {"x": nn.spec.Tensor(["rows", 1, k], "float32"),
                        "$": {"param_mode": "packed", "effect_mode": "none"}}}
    mod, _ = model.export_tvm(spec=spec)
    ex = tvm.compile(mod, target, relax_pipeline=cpu_pipeline(target))
    return relax.VirtualMachine(ex, tvm.cpu())["forward"]


def main(argv=None) -> None:  # pylint: disable=too-many-locals
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", default="q8_0,q4_1")
    parser.add_argument("--shapes", default="768x2048,2048x768,768x32000,576x1536,1536x576,576x49152",
                        help="KxN (in x out) list")
    parser.add_argument("--rows", default="1,8", help="activation rows per call")
    parser.add_argument("--kernels", default="float,int8")
    parser.add_argument("--copies", type=int, default=6,
                        help="weight copies cycled per case (at least enough for --min-mb)")
    parser.add_argument("--min-mb", type=int, default=96,
                        help="cycle at least this many MB of weights per case, well beyond the 32 MB L3")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    target = make_target("llvm")
    rng = np.random.default_rng(0)
    kernels = args.kernels.split(",")
    if any(kernel not in Q.KERNELS for kernel in kernels):
        parser.error(f"--kernels: expected names from {Q.KERNELS}, got {args.kernels!r}")
    try:
        row_counts = [int(r) for r in args.rows.split(",")]
    except ValueError:
        parser.error(f"--rows: expected a list of integers, got {args.rows!r}")
    cases = []
    for fmt in args.dtypes.split(","):
        if fmt not in Q.FORMATS:
            parser.error(f"--dtypes: unknown quantized format {fmt!r}")
        for shape in args.shapes.split(","):
            try:
                k, n = (int(v) for v in shape.split("x"))
            except ValueError:
                parser.error(f"--shapes: expected KxN, got {shape!r}")
            arrays = Q.quantize(fmt, rng.standard_normal((n, k)).astype(np.float32))
            names = [a for a in ("qweight", "scales", "mins") if a in arrays]
            nbytes = sum(arrays[a].nbytes for a in names)
            count = max(args.copies, -(-args.min_mb * 2**20 // nbytes))
            for kernel in kernels:
                fn = build(fmt, k, n, kernel, target)
                # the layout the layer holds its weights in: column tiles for the int8 kernel, rows otherwise
                layout = Q.QuantizedLinear(k, n, fmt, kernel=kernel).layout
                held = Q.to_tiles(fmt, arrays) if layout == "tiles" else arrays
                held_names = [a for a in ("qweight", "scales", "mins") if a in held]  # tiles: qweight only
                # in 2 MB pages, as the engine holds weights
                copies = [list(pack_weights([tvm.runtime.tensor(held[a]) for a in held_names])) for _ in range(count)]
                for rows in row_counts:
                    x = rng.standard_normal((rows, 1, k)).astype(np.float32)
                    got = fn(tvm.runtime.tensor(x), copies[0]).numpy()
                    want = x @ Q.dequantize(fmt, arrays).T
                    err = float(np.abs(got - want).max() / np.abs(want).max())
                    cases.append({"fmt": fmt, "k": k, "n": n, "kernel": kernel, "rows": rows, "fn": fn,
                                  "copies": copies, "x": tvm.runtime.tensor(x), "err": err, "bytes": nbytes,
                                  "times": []})
    bandwidth, loads = [], []
    for _ in range(args.rounds):  # interleaved, so that every case sees the same machine load
        bandwidth.append(stream_read_bandwidth(size_mb=256, repeats=3))
        loads.append(os.getloadavg()[0])
        for case in cases:
            count = len(case["copies"])
            calls = max(2 * count, 24)
            t = time.perf_counter()
            for i in range(calls):
                case["fn"](case["x"], case["copies"][i % count])
            case["times"].append((time.perf_counter() - t) / calls)
    bw = float(np.median(bandwidth))
    print(f"TVM_NUM_THREADS={os.environ['TVM_NUM_THREADS']} mcpu={target.attrs.get('mcpu')} "
          f"read bandwidth {bw / 1e9:.1f} GB/s (median of {args.rounds}), load average "
          f"{min(loads):.1f}-{max(loads):.1f}")
    print("| format | K x N | rows | kernel | us / call | G weights/s | GB/s read | / bandwidth | vs float "
          "| max rel. error vs float x @ W.T |")
    print("|" + "---|" * 10)
    base = {}
    for case in cases:
        t = float(np.median(case["times"]))
        key = (case["fmt"], case["k"], case["n"], case["rows"])
        base.setdefault(key, t)
        print(f"| {case['fmt']} | {case['k']}x{case['n']} | {case['rows']} | {case['kernel']} | {t * 1e6:.0f} "
              f"| {case['k'] * case['n'] / t / 1e9:.1f} | {case['bytes'] / t / 1e9:.1f} "
              f"| {case['bytes'] / t / bw:.2f} | {base[key] / t:.2f}x | {case['err']:.1e} |")


if __name__ == "__main__":
    main()
