"""CPU speed of Spindle's compiled models, per weight format.

For each model and format it compiles the library (cached on disk), drives it through the KV-cache
builtins exactly as the engine does, and prints medians over repeats of:
  prefill tok/s for a 128-token prompt, decode tok/s at batch 1 and batch 8 (aggregate),
  the memory-bandwidth bound of a batch-1 decode step (weight bytes read per step / streaming read
  bandwidth measured in the same run) and the ratio bound/measured (1.00 = at the bound).

Usage:
  TVM_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1 python bench/bench_compile.py [--models random125m,smollm2]
      [--dtypes float32,float16,q8_0,q4_1] [--repeats 5] [--no-schedule]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT / "service"), str(_ROOT / "bench")]

import numpy as np  # noqa: E402

from compile_bandwidth import stream_read_bandwidth  # noqa: E402
from compile_llama import LlamaShape, Runner, build, host_target, random_params, timed  # noqa: E402
from spindle.compiler import quantization as Q  # noqa: E402

MODELS = {
    # The ~125M random Llama of the speed targets.
    "random125m": LlamaShape(),
    # SmolLM2-135M's shape (30 layers, hidden 576, 9/3 heads, tied 49152 vocab), random weights.
    "smollm2-shape": LlamaShape(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                                num_key_value_heads=3, intermediate_size=1536, vocab_size=49152,
                                rope_theta=100000.0),
}


def decode_weight_bytes(specs, dtype: str) -> int:
    """Bytes of weights one decode step reads: every matrix except the embedding table (rows only)."""
    total = 0
    for name, shape, pdtype in specs:
        if name.startswith("embed_tokens"):
            continue
        total += int(np.prod(shape)) * np.dtype(pdtype).itemsize
    return total


def bench_one(cfg: LlamaShape, dtype: str, bandwidth: float, repeats: int, schedule: bool) -> dict:
    lib, specs = build(cfg, dtype, schedule=schedule)
    runner = Runner(lib, random_params(specs, dtype), max_batch=8, max_total=8 * 512, chunk=512)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, cfg.vocab_size, 128).tolist()

    def prefill_once(sid: int) -> float:
        t = timed(lambda: runner.prefill([sid], [prompt]))
        runner.remove([sid])
        return t

    prefill_once(100)  # warm-up
    prefill = [128 / prefill_once(100 + i) for i in range(repeats)]

    def decode_rate(batch: int, steps: int) -> list[float]:
        ids = list(range(batch))
        runner.prefill(ids, [prompt[:16]] * batch)
        toks = [1] * batch
        runner.decode(ids, toks)  # warm-up
        rates = []
        for _ in range(repeats):
            t = timed(lambda: [runner.decode(ids, toks) for _ in range(steps)])
            rates.append(batch * steps / t)
        runner.remove(ids)
        return rates

    steps = 8 if schedule else 2
    d1 = decode_rate(1, steps)
    d8 = decode_rate(8, steps)
    wbytes = decode_weight_bytes(specs, dtype)
    bound = bandwidth / wbytes
    return {"prefill": float(np.median(prefill)), "decode1": float(np.median(d1)),
            "decode8": float(np.median(d8)), "bound": bound, "weight_mb": wbytes / 1e6}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="random125m,smollm2-shape")
    parser.add_argument("--dtypes", default="float32,float16,q8_0,q4_1")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-schedule", action="store_true", help="TVM's plain CPU pipeline, for reference")
    args = parser.parse_args(argv)
    for dtype in args.dtypes.split(","):
        if dtype not in ("float32", "float16", *Q.FORMATS):
            parser.error(f"--dtypes: unknown format {dtype!r}")
    models = args.models.split(",")
    for model in models:
        if model not in MODELS:
            parser.error(f"--models: unknown model {model!r}; choose from {sorted(MODELS)}")

    target = host_target()
    bw = stream_read_bandwidth(target)
    print(f"threads={os.environ['TVM_NUM_THREADS']} target={target.attrs.get('mcpu')} "
          f"stream read bandwidth={bw / 1e9:.1f} GB/s (median of 7)")
    header = (f"| model | format | weights read/step MB | prefill 128 tok/s | decode b1 tok/s | decode b8 tok/s "
              f"| b1 bound tok/s | bound/b1 |")
    print(header)
    print("|" + "---|" * 8)
    for model in models:
        for dtype in args.dtypes.split(","):
            bw_now = stream_read_bandwidth(target, size_mb=256, repeats=5)
            bw = max(bw, bw_now)
            r = bench_one(MODELS[model], dtype, bw, args.repeats, not args.no_schedule)
            print(f"| {model} | {dtype} | {r['weight_mb']:.0f} | {r['prefill']:.0f} | {r['decode1']:.1f} "
                  f"| {r['decode8']:.1f} | {r['bound']:.1f} | {r['bound'] / r['decode1']:.2f} |", flush=True)
    print(f"bound = bandwidth / weight bytes per step, with the highest bandwidth measured in this run "
          f"({bw / 1e9:.1f} GB/s)")


if __name__ == "__main__":
    main()
