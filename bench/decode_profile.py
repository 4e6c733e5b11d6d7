"""Where a decode step of the default model goes: every VM call of ``batch_decode`` timed through the VM's
instrument hook.

The compiled library runs as the engine runs it (``bench_compile.decode_step``: embed, begin_forward,
batch_decode, end_forward); for each context the sequence is prefilled once, and each timed step is undone
with ``kv_state_popn`` so every step sees the same context. The hook is called before and after each VM
call (the fused blocks, the KV cache's attention builtin, the VM's own shape and allocation builtins); it
prints, per call name, the calls per step, the median time per call and the time per step, next to the
median time of the same step without the hook. The hook itself costs ~1 us per call: the small builtins'
times are mostly the hook's, and the instrumented step is that much slower than the plain one.

Usage:
  python bench/decode_profile.py [--dtype q4_1] [--batch 1] [--contexts 16,150,500] [--steps 40]
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "service"), str(ROOT / "bench")]


def profile(runner, batch: int, context: int, steps: int) -> tuple[dict, float, float]:
    """({name: per-call seconds}, instrumented step s, plain step s) over `steps` steps at `context`."""
    from bench_compile import decode_step  # pylint: disable=import-outside-toplevel

    from spindle.compiler.runner import _f  # pylint: disable=import-outside-toplevel

    popn = _f("vm.builtin.kv_state_popn")
    kv = runner.create_kv_cache(max_batch_size=max(8, batch), max_total_seq_len=batch * (context + 64))
    seqs = list(range(batch))
    for s in seqs:
        runner.add_sequence(kv, s)
        runner.prefill(kv, [s], [[(7 * j + s) % 300 + 3 for j in range(context)]])
    step = decode_step(runner, kv, seqs)

    def one() -> float:
        t = time.perf_counter()
        step()
        dt = time.perf_counter() - t
        for s in seqs:
            popn(kv, s, 1)
        return dt

    for _ in range(4):
        one()
    calls: dict[str, list[float]] = collections.defaultdict(list)
    started: dict[str, float] = {}
    clock = time.perf_counter

    def hook(_func, name, before, _ret, *_args):
        if before:
            started[name] = clock()
        else:
            calls[name].append(clock() - started[name])
        return 0  # VMInstrumentReturnKind.kNoOp: run the call as usual

    runner.vm.set_instrument(hook)
    try:
        instrumented = statistics.median(one() for _ in range(steps))
    finally:
        runner.vm.set_instrument(None)
    plain = statistics.median(one() for _ in range(steps))
    return calls, instrumented, plain


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="q4_1")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--contexts", default="16,150,500", help="cached tokens per sequence, comma-separated")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()

    from spindle.cli import resolve_model  # pylint: disable=import-outside-toplevel
    from spindle.compiler.build import set_runtime_threads  # pylint: disable=import-outside-toplevel
    from spindle.compiler.runner import ModelRunner  # pylint: disable=import-outside-toplevel

    set_runtime_threads()
    runner = ModelRunner(resolve_model(None, args.dtype))
    for context in (int(c) for c in args.contexts.split(",")):
        calls, instrumented, plain = profile(runner, args.batch, context, args.steps)
        print(f"\n{args.dtype}, batch {args.batch}, {context} cached tokens: step {plain * 1e3:.3f} ms "
              f"({instrumented * 1e3:.3f} ms instrumented), medians of {args.steps} steps")
        print(f"| {'VM call':<56} | calls/step | us/call | ms/step | of the step |")
        print(f"|{'-' * 58}|------------|---------|---------|-------------|")
        for name, times in sorted(calls.items(), key=lambda kv: -sum(kv[1])):
            per_step = sum(times) / args.steps
            print(f"| {name:<56} | {len(times) / args.steps:10.0f} | {statistics.median(times) * 1e6:7.2f} | "
                  f"{per_step * 1e3:7.3f} | {per_step / instrumented:11.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
