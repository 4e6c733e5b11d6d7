"""Engine benchmark on the default model (SmolLM2-135M-Instruct, compiled by spindle.compiler).

Measures, on the stepped Engine and the ThreadedEngine (the 1-request and 8-request engines step in
turn, so that both rates are taken under the same machine load):
  * single-request decode rate (tokens/s, median over decode steps),
  * aggregate decode rate with 8 concurrent requests, and its ratio to the single rate (target >= 3x),
  * the engine's own share of a batch-8 decode step: Step() wall time (scheduling, sampling, output
    conversion to Python dataclasses) minus the time inside the model, over the step time (target < 10%),
  * end-to-end throughput of the ThreadedEngine with 8 concurrent requests (callback delivery included).
Prints one table. Usage: python bench/bench_engine.py [--dtype float32] [--tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "service"))

from spindle.engine import Engine, EngineConfig, GenerationConfig, ThreadedEngine  # noqa: E402

# llama.cpp on the same 2-core machine (llama-bench / llama-batched-bench, from the project notes).
PEER = {"float32": (52, 184), "float16": (87, 202), "q8_0": (127, 232), "q4_1": (128, 170)}


def prompt(i: int, length: int = 32) -> list[int]:
    return [(1000 + 37 * i + 11 * k) % 40000 + 100 for k in range(length)]


def add_batch(engine: Engine, batch: int, tokens: int) -> None:
    cfg = GenerationConfig(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    for i in range(batch):
        engine.add_request(f"b{batch}-{i}-{time.monotonic_ns()}", prompt(i), cfg)


def timed_step(engine: Engine, batch: int, walls: list[float], models: list[float]) -> None:
    """One step; record (wall, model) time when it was a decode step over the full batch."""
    before = engine.metrics()
    t0 = time.perf_counter()
    outputs = engine.step()
    wall = time.perf_counter() - t0
    after = engine.metrics()
    full = after.decode_tokens - before.decode_tokens == batch
    if after.decode_steps > before.decode_steps and full and not any(o.finished for o in outputs):
        walls.append(wall)
        models.append(after.decode_time_s - before.decode_time_s)


def interleaved_decode(single: Engine, batched: Engine, tokens: int):
    """Decode 1 request on `single` and 8 on `batched`, alternating steps so both see the same machine load."""
    add_batch(single, 1, tokens)
    add_batch(batched, 8, tokens)
    w1, m1, w8, m8 = [], [], [], []
    while not (single.empty() and batched.empty()):
        if not single.empty():
            timed_step(single, 1, w1, m1)
        if not batched.empty():
            timed_step(batched, 8, w8, m8)
    return w1, w8, m8


def threaded_throughput(model: str, batch: int, tokens: int) -> float:
    done = threading.Event()
    count = {"tokens": 0, "finished": 0}

    def callback(outputs):
        for o in outputs:
            count["tokens"] += sum(len(b.token_ids) for b in o.branches)
            count["finished"] += int(o.finished)
        if count["finished"] == batch:
            done.set()

    engine = ThreadedEngine(EngineConfig(model=model, mode="server", max_num_sequence=batch), callback)
    try:
        cfg = GenerationConfig(temperature=0.0, max_tokens=tokens, ignore_eos=True)
        t0 = time.perf_counter()
        for i in range(batch):
            engine.add_request(f"t{i}", prompt(i), cfg)
        done.wait(600)
        return count["tokens"] / (time.perf_counter() - t0)
    finally:
        engine.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32", choices=sorted(PEER))
    parser.add_argument("--model", help="an artifact directory (default: compile the embedded SmolLM2)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    if args.model:
        model = args.model
    else:
        from spindle.compiler.api import compile_model  # pylint: disable=import-outside-toplevel

        model = str(compile_model(None, dtype=args.dtype, progress=False))
    single_engine = Engine(EngineConfig(model=model, mode="server", max_num_sequence=1))
    batch_engine = Engine(EngineConfig(model=model, mode="server", max_num_sequence=8))
    interleaved_decode(single_engine, batch_engine, 8)  # warm up: thread pool, allocator

    single, batch8, overhead, overhead_ms = [], [], [], []
    for _ in range(args.repeats):
        w1, w8, m8 = interleaved_decode(single_engine, batch_engine, args.tokens)
        single.append(1.0 / statistics.median(w1))
        batch8.append(8.0 / statistics.median(w8))
        overhead.append(statistics.median([(w - m) / w for w, m in zip(w8, m8)]))
        overhead_ms.append(1000 * statistics.median([w - m for w, m in zip(w8, m8)]))
    del single_engine, batch_engine
    threaded = statistics.median(threaded_throughput(model, 8, args.tokens) for _ in range(args.repeats))

    s1, s8, ov = statistics.median(single), statistics.median(batch8), statistics.median(overhead)
    peer1, peer8 = PEER[args.dtype]
    rows = [
        ("decode, 1 request (tok/s)", f"{s1:.1f}", f"{peer1}", f"{s1 / peer1:.2f}x", ""),
        ("decode, 8 requests aggregate (tok/s)", f"{s8:.1f}", f"{peer8}", f"{s8 / peer8:.2f}x", ""),
        ("batch-8 / single ratio", f"{s8 / s1:.2f}x", f"{peer8 / peer1:.2f}x", "", "PASS" if s8 / s1 >= 3 else "FAIL"),
        ("engine overhead per batch-8 step", f"{100 * ov:.1f}%", "", "", "PASS" if ov < 0.10 else "FAIL"),
        ("engine overhead per batch-8 step (ms)", f"{statistics.median(overhead_ms):.2f}", "", "", ""),
        ("ThreadedEngine, 8 requests end to end (tok/s)", f"{threaded:.1f}", "", "", ""),
    ]
    print(f"\nSpindle engine, SmolLM2-135M-Instruct {args.dtype}, {os.cpu_count()} cores, "
          f"{args.tokens} tokens per request, medians of {args.repeats} runs")
    head = ("measure", "spindle", "llama.cpp", "vs peer", "target")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print("targets: batch-8 aggregate >= 3x single; engine overhead < 10% of a batch-8 step. "
          "llama.cpp figures are the project's measurements on the same machine type.")


if __name__ == "__main__":
    main()
