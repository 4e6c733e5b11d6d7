"""Decode steps of the default model compiled by a baseline revision and by the working tree, side by side.

Each library runs in a process of its own (two revisions' C kernels export the same symbols, so they cannot
share one process), and the two processes take turns: a round asks each for ``--steps`` decode steps in
turn, so both see the same machine load; the next round starts with the other one. Prints, per format and
batch size, the median step time of each and the median of the per-round ratios (baseline / current: above
1 the working tree is faster).

Usage:
  python bench/decode_ab.py [--baseline REV] [--dtypes q4_1,q8_0,float16] [--batches 1,8] [--rounds 15]
      [--steps 32] [--context 100]
The baseline's ``service/`` is unpacked with ``git archive`` (``compile_step.source_tree``); each tree compiles
its own artifact into the model cache on first use.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys

_BENCH = pathlib.Path(__file__).resolve().parent

_WORKER = r"""
import gc, os, sys, time
service, bench, dtype, batch, context = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
sys.path[:0] = [service, bench]
from spindle.cli import resolve_model
from spindle.compiler.build import set_runtime_threads
from spindle.compiler.runner import ModelRunner
from bench_compile import decode_step
set_runtime_threads()
runner = ModelRunner(resolve_model(None, dtype))
kv = runner.create_kv_cache(max_batch_size=max(8, batch), max_total_seq_len=batch * (context + 4096))
seqs = list(range(batch))

def start():
    for s in seqs:
        runner.add_sequence(kv, s)
        runner.prefill(kv, [s], [[(7 * j + s) % 300 + 3 for j in range(context)]])

start()
step = decode_step(runner, kv, seqs)
for _ in range(4):
    step()
gc.disable()
print("ready", flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    for _ in range(int(line)):
        step()
    dt = (time.perf_counter() - t) / int(line)
    for s in seqs:  # the next round starts from the same context (before answering: the other process runs next)
        runner.remove_sequence(kv, s)
    start()
    print(dt, flush=True)
"""


def _start(service: pathlib.Path, dtype: str, batch: int, context: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(service), str(_BENCH), dtype, str(batch), str(context)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise SystemExit(f"the decode worker for {service} ({dtype}) did not start")
    return proc


def compare(trees: dict, dtype: str, batch: int, rounds: int, steps: int, context: int) -> dict:
    procs = {tag: _start(tree, dtype, batch, context) for tag, tree in trees.items()}
    times = {tag: [] for tag in procs}
    try:
        for r in range(rounds):
            order = list(procs) if r % 2 == 0 else list(reversed(procs))
            for tag in order:
                procs[tag].stdin.write(f"{steps}\n")
                procs[tag].stdin.flush()
                times[tag].append(float(procs[tag].stdout.readline()))
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
    base, cur = times["baseline"], times["current"]
    ratios = [b / c for b, c in zip(base, cur)]
    return {"baseline": statistics.median(base), "current": statistics.median(cur),
            "ratio": statistics.median(ratios), "lo": min(ratios), "hi": max(ratios)}


def main(argv=None) -> None:
    sys.path.insert(0, str(_BENCH))
    from compile_step import source_tree  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare the working tree with")
    parser.add_argument("--dtypes", default="q4_1,q8_0,float16")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--context", type=int, default=100, help="cached tokens per sequence")
    args = parser.parse_args(argv)
    trees = {"baseline": source_tree(args.baseline), "current": source_tree(None)}
    print(f"baseline {args.baseline}; {args.rounds} rounds of {args.steps} steps, context {args.context}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| format | batch | baseline ms/step | current ms/step | baseline / current (median of rounds) | rounds |")
    print("|---|---|---|---|---|---|")
    for dtype in args.dtypes.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            r = compare(trees, dtype, batch, args.rounds, args.steps, args.context)
            print(f"| {dtype} | {batch} | {r['baseline'] * 1e3:.3f} | {r['current'] * 1e3:.3f} | "
                  f"**{r['ratio']:.3f}x** | {r['lo']:.2f}-{r['hi']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
