"""CPU speed of Spindle's compiled models, per weight format.

For each model and format it compiles the library (cached on disk), drives it through the KV-cache
builtins exactly as the engine does, and prints medians over repeats of:
  prefill tok/s for a 128-token prompt, decode tok/s at batch 1 and batch 8 (aggregate),
  the memory-bandwidth bound of a batch-1 decode step (streaming read bandwidth measured in the same run /
  weight bytes read per step) and the ratio measured/bound (1.00 = at the bound).

Usage:
  TVM_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1 python bench/bench_compile.py [--models random125m,smollm2]
      [--dtypes float32,float16,q8_0,q4_1] [--repeats 5] [--no-schedule]
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

from compile_bandwidth import stream_read_bandwidth  # noqa: E402
from spindle.compiler import quantization as Q  # noqa: E402
from spindle.compiler.build import make_target  # noqa: E402
from spindle.compiler.runner import ModelRunner  # noqa: E402

CACHE = pathlib.Path(os.environ.get("SPINDLE_BENCH_CACHE", pathlib.Path.home() / ".cache" / "spindle-bench"))

# The ~125M random Llama of the speed targets (untied lm_head, as in the targets' parameter count).
RANDOM_125M = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 4,
               "intermediate_size": 2048, "vocab_size": 32000, "tie_word_embeddings": False,
               "context_window_size": 2048, "prefill_chunk_size": 512}


def _random_artifact(dtype: str, schedule: bool) -> pathlib.Path:
    """The compiler's Llama with random weights, built like `spindle.compiler.testing.build_tiny_artifact`
    but with a small stand-in tokenizer (the benchmark never tokenizes)."""
    from spindle.compiler import testing  # pylint: disable=import-outside-toplevel
    from spindle.compiler.build import write_artifact  # pylint: disable=import-outside-toplevel
    from spindle.compiler.convert import convert_params, embedding_format, make_model  # pylint: disable=import-outside-toplevel

    key = testing.tiny_content_hash(dtype=dtype, seed=0, target="llvm", schedule=schedule, **RANDOM_125M)
    out = CACHE / f"random125m-{dtype}-{key}"
    if (out / "spindle-config.json").exists():
        return out
    cfg = testing.tiny_config(**RANDOM_125M)
    fmt = embedding_format(dtype, None)
    model = make_model(cfg, make_target("llvm"), dtype, embed_fmt=fmt, head_fmt=fmt)
    params = convert_params(testing.random_params(cfg, 0), cfg, dtype)
    meta = {"bos_token_id": None, "eos_token_ids": [0], "pad_token_id": 0, "chat_template": None,
            "add_bos_token": False}
    return write_artifact(out, model=model, params=params, tokenizer_json=testing.tiny_tokenizer_json(384),
                          meta=meta, dtype=dtype, target="llvm", content_hash=key,
                          source="random-llama-125m(seed=0)", schedule=schedule)


def artifact(model: str, dtype: str, schedule: bool) -> pathlib.Path:
    if model == "random125m":
        return _random_artifact(dtype, schedule)
    from spindle.compiler.api import compile_model  # pylint: disable=import-outside-toplevel

    return compile_model(None, dtype=dtype, progress=False, schedule=schedule)


def decode_weight_bytes(runner: ModelRunner) -> int:
    """Bytes of weights one decode step reads: all parameters but an untied embedding table (rows only)."""
    names = runner.config["param_names"]
    tied = runner.config.get("tie_word_embeddings", False)
    total = 0
    for name, param in zip(names, runner.params):
        if name.startswith("embed_tokens.") and not tied:
            continue
        total += int(np.prod(param.shape)) * np.dtype(str(param.dtype)).itemsize
    return total


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_one(model: str, dtype: str, repeats: int, schedule: bool) -> dict:
    runner = ModelRunner(artifact(model, dtype, schedule))
    vocab = runner.config["vocab_size"]
    kv = runner.create_kv_cache(max_batch_size=8, max_total_seq_len=8 * 512, prefill_chunk_size=512)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, vocab, 128).tolist()

    def prefill_once(sid: int) -> float:
        runner.add_sequence(kv, sid)
        t = timed(lambda: runner.prefill(kv, [sid], [prompt]))
        runner.remove_sequence(kv, sid)
        return t

    prefill_once(100)  # warm-up
    prefill = [128 / prefill_once(101 + i) for i in range(repeats)]

    def decode_rates(batch: int, steps: int) -> list[float]:
        ids = list(range(batch))
        for sid in ids:
            runner.add_sequence(kv, sid)
        runner.prefill(kv, ids, [prompt[:16]] * batch)
        toks = [1] * batch
        runner.decode(kv, ids, toks)  # warm-up
        rates = []
        for _ in range(repeats):
            rates.append(batch * steps / timed(lambda: [runner.decode(kv, ids, toks) for _ in range(steps)]))
        for sid in ids:
            runner.remove_sequence(kv, sid)
        return rates

    steps = 8 if schedule else 1
    d1, d8 = decode_rates(1, steps), decode_rates(8, steps)
    return {"prefill": float(np.median(prefill)), "decode1": float(np.median(d1)),
            "decode8": float(np.median(d8)), "weight_bytes": decode_weight_bytes(runner)}


MODEL_NAMES = ("random125m", "smollm2")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--dtypes", default="float32,float16,q8_0,q4_1")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-schedule", action="store_true", help="TVM's plain CPU pipeline, for reference")
    args = parser.parse_args(argv)
    dtypes, models = args.dtypes.split(","), args.models.split(",")
    for dtype in dtypes:
        if dtype not in ("float32", "float16", *Q.FORMATS):
            parser.error(f"--dtypes: unknown format {dtype!r}")
    for model in models:
        if model not in MODEL_NAMES:
            parser.error(f"--models: unknown model {model!r}; choose from {', '.join(MODEL_NAMES)}")

    target = make_target("llvm")
    print(f"TVM_NUM_THREADS={os.environ['TVM_NUM_THREADS']} mcpu={target.attrs.get('mcpu')} "
          f"repeats={args.repeats} (medians){' UNSCHEDULED' if args.no_schedule else ''}")
    print("| model | format | weights read/step MB | prefill 128 tok/s | decode b1 tok/s | decode b8 tok/s "
          "| read GB/s | b1 bound tok/s | b1 / bound |")
    print("|" + "---|" * 9)
    for model in models:
        for dtype in dtypes:
            before = stream_read_bandwidth(target, size_mb=256, repeats=5)
            r = bench_one(model, dtype, args.repeats, not args.no_schedule)
            bw = max(before, stream_read_bandwidth(target, size_mb=256, repeats=5))
            bound = bw / r["weight_bytes"]
            print(f"| {model} | {dtype} | {r['weight_bytes'] / 1e6:.0f} | {r['prefill']:.0f} | {r['decode1']:.1f} "
                  f"| {r['decode8']:.1f} | {bw / 1e9:.1f} | {bound:.1f} | {r['decode1'] / bound:.2f} |", flush=True)
    print("read GB/s: streaming read bandwidth (parallel vectorised sum of 256 MB, median of 5, the higher of the"
          " measurements just before and after the row); b1 bound = read GB/s / weight bytes per step;"
          " b1 / bound = 1.00 at the bound (target >= 0.80).")


if __name__ == "__main__":
    main()
