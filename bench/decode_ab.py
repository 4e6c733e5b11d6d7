"""Decode steps of the default model compiled by a baseline revision and by the working tree, side by side.

Each library runs in a process of its own, and the two processes take turns: a round asks each for
``--steps`` decode steps in turn, so both see the same machine load; the next round starts with the other
one. Prints, per format and batch size, the median step time of each and the median of the per-round
ratios (baseline / current: above 1 the working tree is faster). On this machine the two-process runs lean
2-7% towards the working tree (docs/performance.md); ``--in-process`` loads both libraries into this
process instead (each compiled by its own tree in a subprocess, ``compile_step.artifact``; a library calls
its own copy of the C kernels) and alternates them the same way.

With ``--probe`` each round starts with the streaming read bandwidth (``compile_bandwidth``), and the rounds
are also reported per state of the machine (at or above ``--fast-gbs`` GB/s, and below): the two virtual
cores read ~30-37 GB/s in one state and ~50-63 in the other, and a change can help in one and not the other.
For each state: the rounds, the median bandwidth, each side's median step and its batch-1 ratio to the
bandwidth bound (the weights one step reads / the round's bandwidth; 1.00 at the bound).

Usage:
  python bench/decode_ab.py [--baseline REV] [--dtypes q4_1,q8_0,float16] [--batches 1,8] [--rounds 15]
      [--steps 32] [--context 100] [--probe [--fast-gbs 45]] [--in-process]
  python bench/decode_ab.py --baseline . --env-baseline SPINDLE_PREFETCH=none [--env-current ...] ...
      (``.``: the working tree on both sides, each worker process with its own environment variables, e.g.
      the C kernels' run-time choices; environment variants need the two processes)
The baseline's ``service/`` is unpacked with ``git archive`` (``compile_step.source_tree``); each tree compiles
its own artifact into the model cache on first use.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import statistics
import subprocess
import sys
import time

_BENCH = pathlib.Path(__file__).resolve().parent

_WORKER = r"""
import gc, os, sys, time
service, bench, dtype, batch, context = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
sys.path[:0] = [service, bench]
from spindle.cli import resolve_model
from spindle.compiler.build import set_runtime_threads
from spindle.compiler.runner import ModelRunner
from bench_compile import decode_step, decode_weight_bytes
from decode_ab import start_sequences
set_runtime_threads()
runner = ModelRunner(resolve_model(None, dtype))
weight_bytes = decode_weight_bytes(runner)
kv = runner.create_kv_cache(max_batch_size=max(8, batch), max_total_seq_len=batch * (context + 4096))
seqs = list(range(batch))
start_sequences(runner, kv, seqs, context)
step = decode_step(runner, kv, seqs)
for _ in range(4):
    step()
gc.disable()
print("ready", weight_bytes, flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    for _ in range(int(line)):
        step()
    dt = (time.perf_counter() - t) / int(line)
    start_sequences(runner, kv, seqs, context, restart=True)  # before answering: the other process runs next
    print(dt, flush=True)
"""


def start_sequences(runner, kv, seqs: list[int], context: int, restart: bool = False) -> None:
    """Sequences ``seqs`` in the cache, each prefilled with the same ``context`` tokens every time; with
    ``restart`` they are removed first, so that every round starts from the same context."""
    for s in seqs:
        if restart:
            runner.remove_sequence(kv, s)
        runner.add_sequence(kv, s)
        runner.prefill(kv, [s], [[(7 * j + s) % 300 + 3 for j in range(context)]])


def parse_env(text: str) -> dict[str, str]:
    """``"NAME=VALUE,NAME2=VALUE2"`` as a dict (empty text: no variables)."""
    env = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        env[name] = value
    return env


def _start(service: pathlib.Path, dtype: str, batch: int, context: int,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(service), str(_BENCH), dtype, str(batch), str(context)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **env} if env else None)
    line = proc.stdout.readline().split()
    if not line or line[0] != "ready":
        proc.kill()
        raise SystemExit(f"the decode worker for {service} ({dtype}) did not start")
    proc.weight_bytes = int(line[1])
    return proc


def compare(trees: dict, dtype: str, batch: int, rounds: int, steps: int, context: int,
            probe: bool = False, envs: dict | None = None) -> dict:
    """Each side in a worker process of its own (``envs``: extra environment variables per side)."""
    from compile_bandwidth import stream_read_bandwidth  # pylint: disable=import-outside-toplevel

    envs = envs or {}
    procs = {tag: _start(tree, dtype, batch, context, envs.get(tag)) for tag, tree in trees.items()}
    times = {tag: [] for tag in procs}
    bandwidths = []
    try:
        for r in range(rounds):
            if probe:
                bandwidths.append(stream_read_bandwidth(size_mb=256, repeats=3))
            order = list(procs) if r % 2 == 0 else list(reversed(procs))
            for tag in order:
                procs[tag].stdin.write(f"{steps}\n")
                procs[tag].stdin.flush()
                times[tag].append(float(procs[tag].stdout.readline()))
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
    return _summary(times, bandwidths, {tag: proc.weight_bytes for tag, proc in procs.items()})


def _summary(times: dict, bandwidths: list, weight_bytes: dict) -> dict:
    """A comparison's result: each side's median step, the per-round ratios' median and range, the rounds."""
    base, cur = times["baseline"], times["current"]
    ratios = [b / c for b, c in zip(base, cur)]
    return {"baseline": statistics.median(base), "current": statistics.median(cur),
            "ratio": statistics.median(ratios), "lo": min(ratios), "hi": max(ratios), "times": times,
            "bandwidths": bandwidths, "weight_bytes": weight_bytes}


def compare_in_process(trees: dict, dtype: str, batch: int, rounds: int, steps: int, context: int,
                       probe: bool = False) -> dict:
    """`compare` with both libraries loaded into this process."""
    from bench_compile import decode_step, decode_weight_bytes  # pylint: disable=import-outside-toplevel
    from compile_bandwidth import stream_read_bandwidth  # pylint: disable=import-outside-toplevel
    from compile_step import artifact  # pylint: disable=import-outside-toplevel

    from spindle.compiler.build import set_runtime_threads  # pylint: disable=import-outside-toplevel
    from spindle.compiler.runner import ModelRunner  # pylint: disable=import-outside-toplevel

    set_runtime_threads()
    seqs = list(range(batch))
    sides = {}
    for tag, tree in trees.items():
        runner = ModelRunner(artifact(tree, tag, dtype))
        kv = runner.create_kv_cache(max_batch_size=max(8, batch), max_total_seq_len=batch * (context + 4096))
        sides[tag] = (runner, kv, decode_step(runner, kv, seqs))
    for runner, kv, step in sides.values():
        start_sequences(runner, kv, seqs, context)
        for _ in range(4):
            step()
    times = {tag: [] for tag in sides}
    bandwidths = []
    for r in range(rounds):
        if probe:
            bandwidths.append(stream_read_bandwidth(size_mb=256, repeats=3))
        for tag in (list(sides) if r % 2 == 0 else list(reversed(sides))):
            runner, kv, step = sides[tag]
            t = time.perf_counter()
            for _ in range(steps):
                step()
            times[tag].append((time.perf_counter() - t) / steps)
            start_sequences(runner, kv, seqs, context, restart=True)
    return _summary(times, bandwidths, {tag: decode_weight_bytes(side[0]) for tag, side in sides.items()})


def by_state(r: dict, batch: int, fast_gbs: float) -> list[str]:
    """Table rows of one comparison's rounds split by the machine's state (the round's read bandwidth)."""
    rows = []
    for name, fast in (("fast", True), ("slow", False)):
        idx = [i for i, bw in enumerate(r["bandwidths"]) if (bw >= fast_gbs * 1e9) == fast]
        if not idx:
            continue
        bw = statistics.median(r["bandwidths"][i] for i in idx)
        cells = []
        for tag in ("baseline", "current"):
            step = statistics.median(r["times"][tag][i] for i in idx)
            # b1 / bound per round: the bound is the round's bandwidth over the weights a step reads
            ratio = statistics.median(r["weight_bytes"][tag] / r["bandwidths"][i] / r["times"][tag][i] for i in idx)
            cells.append(f"{step * 1e3:.3f} ms ({ratio:.2f})" if batch == 1 else f"{step * 1e3:.3f} ms")
        gain = statistics.median(r["times"]["baseline"][i] / r["times"]["current"][i] for i in idx)
        rows.append(f"| {name} | {len(idx)} | {bw / 1e9:.1f} | {cells[0]} | {cells[1]} | {gain:.3f}x |")
    return rows


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
    parser.add_argument("--probe", action="store_true", help="measure the read bandwidth before each round and "
                        "report the rounds per state of the machine")
    parser.add_argument("--fast-gbs", type=float, default=45.0, help="the bandwidth (GB/s) from which a round "
                        "counts as the fast state (default 45)")
    parser.add_argument("--in-process", action="store_true", help="both libraries in this process (no two-process "
                        "lean)")
    parser.add_argument("--env-baseline", default="", metavar="NAME=VALUE,...",
                        help="environment variables of the baseline's worker process (two processes only)")
    parser.add_argument("--env-current", default="", metavar="NAME=VALUE,...",
                        help="environment variables of the working tree's worker process (two processes only)")
    args = parser.parse_args(argv)
    try:
        envs = {"baseline": parse_env(args.env_baseline), "current": parse_env(args.env_current)}
    except ValueError as exc:
        parser.error(str(exc))
    if args.in_process and any(envs.values()):
        parser.error("--env-baseline / --env-current need a process per side (leave out --in-process)")
    run = compare_in_process if args.in_process else functools.partial(compare, envs=envs)
    trees = {"baseline": source_tree(None if args.baseline == "." else args.baseline), "current": source_tree(None)}
    labels = {"baseline": f"baseline {args.baseline}", "current": "current"}
    for tag, text in (("baseline", args.env_baseline), ("current", args.env_current)):
        if envs[tag]:
            labels[tag] += f" ({text})"
    print(f"{labels['baseline']}; {labels['current']}; {args.rounds} rounds of {args.steps} steps, "
          f"context {args.context}, "
          f"{'one process' if args.in_process else 'two processes'}, load average {os.getloadavg()[0]:.1f}")
    print("| format | batch | baseline ms/step | current ms/step | baseline / current (median of rounds) | rounds |")
    print("|---|---|---|---|---|---|")
    states = []
    for dtype in args.dtypes.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            r = run(trees, dtype, batch, args.rounds, args.steps, args.context, args.probe)
            print(f"| {dtype} | {batch} | {r['baseline'] * 1e3:.3f} | {r['current'] * 1e3:.3f} | "
                  f"**{r['ratio']:.3f}x** | {r['lo']:.2f}-{r['hi']:.2f} |", flush=True)
            if args.probe:
                states += [f"| {dtype} | {batch} " + row for row in by_state(r, batch, args.fast_gbs)]
    if states:
        print(f"\nper state (fast: read >= {args.fast_gbs:g} GB/s); batch 1: step (its median ratio to the bound)")
        print("| format | batch | state | rounds | read GB/s | baseline | current | baseline / current |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(states))


if __name__ == "__main__":
    main()
