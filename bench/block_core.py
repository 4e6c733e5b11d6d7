"""Per-core efficiency of the int8 fused decode blocks (bench/block_core.c), optionally side by side with a
baseline revision's kernels.

One thread runs a SmolLM2-shaped q4_1 batch-1 step as one of two threads would (only its own half of
every matmul, never waiting), alternating step by step with plain kernel calls over the same halves. The
machine's fast state has two cores that each stream on their own, so there a step can only be as fast as
each core streams its half through the blocks; the slow state's two threads share one core's memory
pipeline, which hides what one thread loses. This measures the first in either state.

Each round runs each build's harness in turn (the order alternates) for ``--steps`` steps of each kind,
after the streaming read bandwidth of one thread (``compile_bandwidth``). Prints per build the medians
over rounds of: the blocks' step, the plain calls' step, each as GB/s over the half's bytes, and plain /
blocks (1.00: the blocks stream as fast as plain calls); with a baseline, the median of the per-round
ratios of the blocks' steps (baseline / current: above 1 the working tree is faster).

Usage:
  python bench/block_core.py [--baseline REV] [--rounds 11] [--steps 60]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

_BENCH = pathlib.Path(__file__).resolve().parent
SOURCE = _BENCH / "block_core.c"


def build(service: pathlib.Path, out_dir: pathlib.Path, tag: str) -> pathlib.Path:
    """The harness compiled against the kernels of ``service`` (a source tree's ``service/``), with the flags
    the kernels are built with for a model library."""
    kernels = service / "spindle" / "compiler" / "kernels"
    out = out_dir / f"block_core-{tag}"
    cmd = [os.environ.get("CC", "cc"), "-x", "c", "-std=gnu11", "-O3", "-fno-math-errno", "-I", str(kernels),
           str(SOURCE), "-o", str(out), "-lm"]
    subprocess.run(cmd, check=True)
    return out


def run(binary: pathlib.Path, steps: int) -> dict[str, float]:
    out = subprocess.run([str(binary), str(steps)], check=True, capture_output=True, text=True).stdout.split()
    fields = dict(zip(out[::2], out[1::2]))
    return {"blocks": float(fields["blocks"]), "plain": float(fields["plain"]), "bytes": int(fields["bytes"])}


def main(argv=None) -> None:
    sys.path.insert(0, str(_BENCH))
    from compile_bandwidth import stream_read_bandwidth  # pylint: disable=import-outside-toplevel
    from compile_step import source_tree  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=None, help="git revision whose kernels to compare with")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--steps", type=int, default=60, help="steps of each kind per round")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="block-core-") as tmp:
        builds = {"current": build(source_tree(None), pathlib.Path(tmp), "current")}
        if args.baseline:
            builds = {"baseline": build(source_tree(args.baseline), pathlib.Path(tmp), "baseline"), **builds}
        results = {tag: [] for tag in builds}
        one_thread = []
        for r in range(args.rounds):
            one_thread.append(stream_read_bandwidth(size_mb=256, repeats=3, threads=1))
            for tag in (list(builds) if r % 2 == 0 else list(reversed(builds))):
                results[tag].append(run(builds[tag], args.steps))
    print(f"{args.rounds} rounds of {args.steps} steps of each kind; one thread reads "
          f"{statistics.median(one_thread) / 1e9:.1f} GB/s (median; {min(one_thread) / 1e9:.1f}-"
          f"{max(one_thread) / 1e9:.1f})")
    print("| build | blocks ms/step | plain ms/step | blocks GB/s | plain GB/s | plain / blocks |")
    print("|---|---|---|---|---|---|")
    for tag, rs in results.items():
        blocks, plain = statistics.median(x["blocks"] for x in rs), statistics.median(x["plain"] for x in rs)
        half = rs[0]["bytes"]
        eff = statistics.median(x["plain"] / x["blocks"] for x in rs)
        print(f"| {tag} | {blocks * 1e3:.3f} | {plain * 1e3:.3f} | {half / blocks / 1e9:.1f} | "
              f"{half / plain / 1e9:.1f} | {eff:.2f} |")
    if args.baseline:
        ratios = [b["blocks"] / c["blocks"] for b, c in zip(results["baseline"], results["current"])]
        print(f"blocks, baseline / current (median of rounds): **{statistics.median(ratios):.3f}x** "
              f"({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
