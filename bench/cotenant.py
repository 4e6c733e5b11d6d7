"""What another process on the model's cores costs a decode.

The in-process engine's tokens/s with and without a co-tenant, side by side.

The co-tenant is a separate Python process that sleeps for a period and then computes for a while, over and
over (``--load BUSY_US@PERIOD_MS``): the shape of a client, a sidecar or a log shipper that wakes up now and
then on a host whose every core the model uses. It reports its own CPU time, so each row shows the share of
the machine it took next to what the engine lost. The engine's compute threads work in lockstep (a fused
block's phases wait for each other), so a thread that the co-tenant preempts holds the others up: a loss above
the co-tenant's share is that amplification. bench/bench_grpc.py's "client" column gives the share a gRPC
client takes.

The workload is bench_grpc's in-process one (the server preset, 64 greedy tokens a stream, prompts tokenized
and outputs detokenized in the callback). Runs alternate quiet and loaded (ABBA order).

    python bench/cotenant.py                                  # default model q4_1, 1 and 16 streams
    python bench/cotenant.py --load 100@4 --load 1000@40 --concurrency 1 --repeat 15

The co-tenant is started as a new interpreter, not forked from this process: a co-tenant forked from the
engine's process cost the engine a quarter to a third of its tokens/s in a trial, at each of three loads.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "service"), str(ROOT / "clients" / "python"), str(ROOT / "bench")]

from bench_grpc import SETTLE_S, InProcess, add_workload_arguments, machine_share  # noqa: E402

# the co-tenant: "ready" once started, then wake / compute until SIGTERM, then its CPU time and lifetime since
# "ready" (s) on one line
TENANT = r"""
import signal, sys, time
busy, period = float(sys.argv[1]) / 1e6, float(sys.argv[2]) / 1e3
def done(*_):
    print(time.process_time() - c0, time.perf_counter() - t0, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
c0, t0 = time.process_time(), time.perf_counter()
print("ready", flush=True)
while True:
    time.sleep(period)
    t = time.perf_counter()
    while time.perf_counter() - t < busy:
        pass
"""


class CoTenant:
    def __init__(self, busy_us: float, period_ms: float):
        self.proc = subprocess.Popen([sys.executable, "-c", TENANT, str(busy_us), str(period_ms)],
                                     stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("the co-tenant did not start")

    def stop(self) -> float:
        """Stops it; its share of the machine while it ran (100 = every core)."""
        self.proc.send_signal(signal.SIGTERM)
        report = self.proc.stdout.readline().split()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if len(report) != 2:
            raise RuntimeError(f"the co-tenant ended without its report (exit status {self.proc.returncode})")
        cpu_s, life_s = (float(x) for x in report)
        return machine_share(cpu_s, life_s)


def parse_load(text: str) -> tuple[float, float]:
    busy, _, period = text.partition("@")
    if not period:
        raise argparse.ArgumentTypeError(f"--load takes BUSY_US@PERIOD_MS, e.g. 100@4; got {text!r}")
    return float(busy), float(period)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_arguments(p)
    p.add_argument("--load", type=parse_load, action="append", metavar="BUSY_US@PERIOD_MS",
                   help="a co-tenant computing BUSY_US microseconds every PERIOD_MS milliseconds (repeatable; "
                        "default 100@4 and 100@20)")
    p.add_argument("--repeat", type=int, default=10, help="rounds (a quiet and a loaded run each)")
    args = p.parse_args()
    loads = args.load or [(100.0, 4.0), (100.0, 20.0)]

    from spindle.cli import resolve_model
    from spindle.server.app import freeze_loaded_objects

    model_dir = resolve_model(args.model, args.dtype)
    print(f"model {model_dir.name}, {args.max_tokens} tokens per stream, {args.repeat} rounds, "
          f"{os.cpu_count()} cores", flush=True)
    engine = InProcess(model_dir)
    rows = []
    try:
        engine.run(1, 4)  # warm up
        freeze_loaded_objects()
        for busy, period in loads:
            for c in args.concurrency:
                quiet, loaded, shares = [], [], []
                for i in range(args.repeat):
                    for with_tenant in ((False, True) if i % 2 == 0 else (True, False)):
                        tenant = CoTenant(busy, period) if with_tenant else None
                        try:
                            time.sleep(SETTLE_S)  # the previous run's worker threads spin down; the tenant settles
                            tok_s = engine.run(c, args.max_tokens)["tok_s"]
                        finally:
                            share = tenant.stop() if tenant is not None else None
                        if tenant is None:
                            quiet.append(tok_s)
                        else:
                            shares.append(share)
                            loaded.append(tok_s)
                rows.append((c, f"{busy:g} us every {period:g} ms", statistics.median(shares),
                             statistics.median(quiet), statistics.median(loaded),
                             statistics.median(b / a - 1 for a, b in zip(quiet, loaded))))
    finally:
        engine.close()
    print("| streams | co-tenant | its share | quiet tok/s | with it tok/s | change | per round | loss / share |")
    print("|---|---|---|---|---|---|---|---|")
    for c, load, share, q, w, per in rows:
        change = 100 * (w / q - 1)
        print(f"| {c} | {load} | {share:.2f}% | {q:.1f} | {w:.1f} | {change:+.1f}% | {100 * per:+.1f}% | "
              f"{-100 * per / share:.1f}x |")
    print("its share: the co-tenant's CPU time over its lifetime, of all cores; change: the medians compared; per "
          "round: the median of each round's back-to-back ratio; loss / share: what the engine lost (per round) "
          "per unit of the machine the co-tenant took (1x: the engine lost only the time the co-tenant used)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
