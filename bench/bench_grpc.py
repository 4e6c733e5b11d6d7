"""gRPC overhead: the same workload on the in-process ThreadedEngine and through a `spindle serve` process.

For 1 and 16 concurrent streams it reports time to first token (TTFT) and inter-token latency (ITL) at
p50/p99, the median gap between two messages of a stream, and the aggregate decode throughput, side by side,
with the gRPC/in-process ratio.

The peers do the same work a user gets: the in-process engine has the settings `spindle serve` gives it
(the server preset, outputs paced by --stream-interval-ms and --max-messages-per-s), tokenizes each request's
prompt as it adds it and detokenizes every request incrementally in its output callback (what the server does
for a gRPC stream); the gRPC client (AsyncClient.stream) runs in
this process, the server in its own. Rounds alternate the two paths (ABBA order, so drifting machine load
hits both alike); the table shows medians and the load average before and after.

    python bench/bench_grpc.py                       # the default model (SmolLM2-135M-Instruct, q4_1)
    python bench/bench_grpc.py --model DIR --max-tokens 64 --concurrency 1 16 --repeat 3
    python bench/bench_grpc.py --chat                # the prompt as one user message of a chat
    python bench/bench_grpc.py --sync                # also the synchronous Python client (a thread per stream)
    python bench/bench_grpc.py --engine-cpus 0 --client-cpus 1   # the clients off the engines' CPUs

With --engine-cpus / --client-cpus the engines (in process, and the servers with all their threads) run on
some CPUs and the clients (Python and Go) on others, as on a deployment whose clients run elsewhere; on a
2-core machine that leaves the engines one compute thread, so the figures are of a slower engine.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import math
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "service"), str(ROOT / "clients" / "python")]

PROMPT = ("Once upon a time, in a small village at the edge of a great forest, there lived an old clockmaker "
          "who repaired every clock in the valley. One winter morning")
CHAT = [{"role": "user", "content": PROMPT}]
SETTLE_S = 0.4  # pause before each run (see main)


@dataclass
class Trace:
    """Arrival times of one request: start, and one entry per token."""

    start: float
    tokens: list[float] = field(default_factory=list)

    def add(self, n: int, t: float) -> None:
        self.tokens.extend([t] * n)

    def deliveries(self) -> list[float]:
        """Arrival times of its messages over gRPC (of the callbacks that carried its tokens, in process)."""
        return sorted(set(self.tokens))


def summarize(traces: list[Trace], wall_s: float, client_cpu_s: float = float("nan")) -> dict[str, float]:
    """The round's figures; `client_cpu_s`: the CPU time the client spent in it (all its threads), reported as a
    share of the machine (100% = every core for the whole round)."""
    ttft = [(tr.tokens[0] - tr.start) * 1e3 for tr in traces if tr.tokens]
    itl = []
    for tr in traces:
        # gaps between token arrivals; tokens delivered in one batch share the gap evenly
        times = tr.tokens
        i = 1
        while i < len(times):
            j = i
            while j + 1 < len(times) and times[j + 1] == times[i]:
                j += 1
            gap = (times[i] - times[i - 1]) * 1e3 / (j - i + 1)
            itl.extend([gap] * (j - i + 1))
            i = j + 1
    gaps = [gap for tr in traces for gap in message_gaps(tr)]
    total = sum(len(tr.tokens) for tr in traces)
    msgs = statistics.mean(len(tr.deliveries()) for tr in traces) if traces else float("nan")
    return {"ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99), "itl_p50": pct(itl, 50), "itl_p99": pct(itl, 99),
            "gap_p50": pct(gaps, 50), "msgs": msgs, "tok_s": total / wall_s,
            "client_cpu": machine_share(client_cpu_s, wall_s)}


def machine_share(cpu_s: float, wall_s: float) -> float:
    """CPU time spent over a wall time, as a share of the machine (100 = every core throughout)."""
    return 100 * cpu_s / (wall_s * (os.cpu_count() or 1))


def message_gaps(trace: Trace) -> list[float]:
    """What a reader of the stream sees: ms between two of its messages (deliveries, in process)."""
    times = trace.deliveries()
    return [(b - a) * 1e3 for a, b in zip(times, times[1:])]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))
    return s[k]


# -- in-process engine -----------------------------------------------------------------------------------
class InProcess:
    def __init__(self, model_dir: Path, chat: bool = False):
        self.chat = chat
        from spindle.engine import EngineConfig, ThreadedEngine
        from spindle.tokenizer import Tokenizer

        self.tok = Tokenizer.from_artifact(model_dir)
        self._traces: dict[str, Trace] = {}
        self._done: dict[str, threading.Event] = {}
        self._detok: dict[str, object] = {}
        self._lock = threading.Lock()
        from spindle.server.app import ServerOptions

        # the engine as `spindle serve` sets it up by default (the server preset, batch = the model's; outputs
        # delivered at most every --stream-interval-ms and within --max-messages-per-s), so both paths
        # schedule and deliver alike
        defaults = ServerOptions()
        interval_us = int(round(defaults.stream_interval_ms * 1000))
        self.engine = ThreadedEngine(EngineConfig(model=str(model_dir), mode="server", output_interval_us=interval_us,
                                                  output_budget_per_s=defaults.max_messages_per_s), self._on_outputs)
        self._n = 0

    def _on_outputs(self, outputs) -> None:
        with self._lock:
            for out in outputs:
                tr = self._traces.get(out.request_id)
                if tr is None:
                    continue
                detok = self._detok[out.request_id]
                n = 0
                for b in out.branches:
                    n += len(b.token_ids)
                    detok.push(b.token_ids)
                    if b.finish_reason is not None:
                        detok.flush()
                tr.add(n, time.perf_counter())
                if out.finished:
                    self._done[out.request_id].set()

    def run(self, concurrency: int, max_tokens: int) -> dict[str, float]:
        from spindle.detokenizer import IncrementalDetokenizer
        from spindle.engine import GenerationConfig

        decode = self.tok.tokenizer.decode
        cfg = GenerationConfig(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        rids = []
        t0 = time.perf_counter()
        for _ in range(concurrency):
            self._n += 1
            rid = f"bench-{self._n}"
            with self._lock:
                self._traces[rid] = Trace(time.perf_counter())
                self._done[rid] = threading.Event()
                # each request tokenizes its prompt (a chat rendered first), as the server does per stream
                ids = self.tok.encode_chat(CHAT) if self.chat else self.tok.encode(PROMPT)
                self._detok[rid] = IncrementalDetokenizer(decode, ids)
            self.engine.add_request(rid, ids, cfg)
            rids.append(rid)
        for rid in rids:
            self._done[rid].wait(600)
        wall = time.perf_counter() - t0
        for r in rids:
            self._detok.pop(r, None)
        return summarize([self._traces.pop(r) for r in rids], wall)

    def close(self) -> None:
        self.engine.shutdown()


# -- over gRPC ---------------------------------------------------------------------------------------------
class OverGrpc:
    def __init__(self, model_dir: Path, *server_args: str, chat: bool = False):
        self.chat = chat
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "service"), str(ROOT / "clients" / "python"),
                                             env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen([sys.executable, "-m", "spindle.cli", "serve", str(model_dir), "--port", "0",
                                      *server_args],
                                     env=env, stderr=subprocess.PIPE, text=True)
        atexit.register(self.close)  # never leave the server behind when the benchmark dies
        port = None
        for line in self.proc.stderr:
            m = re.search(r"serving .* on [\d.]+:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            raise RuntimeError("the server did not start")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        self.target = f"127.0.0.1:{port}"

    def run(self, concurrency: int, max_tokens: int) -> dict[str, float]:
        return asyncio.run(self._run(concurrency, max_tokens))

    async def _run(self, concurrency: int, max_tokens: int) -> dict[str, float]:
        from spindle_client import AsyncClient

        async with AsyncClient(self.target, timeout=600) as client:
            await client.generate(PROMPT, max_tokens=1, temperature=0)  # connect

            async def one() -> Trace:
                tr = Trace(time.perf_counter())
                prompt = dict(messages=CHAT) if self.chat else dict(prompt=PROMPT)
                async for d in client.stream(**prompt, max_tokens=max_tokens, temperature=0, ignore_eos=True):
                    tr.add(len(d.token_ids), time.perf_counter())
                return tr

            t0, cpu0 = time.perf_counter(), time.process_time()
            traces = await asyncio.gather(*[one() for _ in range(concurrency)])
            # this process's CPU: the client's (the in-process engine's threads are asleep by now, see main)
            return summarize(list(traces), time.perf_counter() - t0, time.process_time() - cpu0)

    def close(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class OverGrpcSync:
    """The same streams from the synchronous Python client (`SyncClient.stream`, a thread per stream) against
    the same server."""

    def __init__(self, target: str, chat: bool = False):
        from spindle_client import SyncClient

        self.client = SyncClient(target, timeout=600)
        self.client.generate(PROMPT, max_tokens=1, temperature=0)  # connect
        self.chat = chat

    def run(self, concurrency: int, max_tokens: int) -> dict[str, float]:
        prompt = dict(messages=CHAT) if self.chat else dict(prompt=PROMPT)
        traces = [Trace(0.0) for _ in range(concurrency)]
        go = threading.Barrier(concurrency + 1)

        def one(tr: Trace) -> None:
            go.wait()
            tr.start = time.perf_counter()
            for d in self.client.stream(**prompt, max_tokens=max_tokens, temperature=0, ignore_eos=True):
                tr.add(len(d.token_ids), time.perf_counter())

        threads = [threading.Thread(target=one, args=(tr,)) for tr in traces]
        for t in threads:
            t.start()
        go.wait()
        t0, cpu0 = time.perf_counter(), time.process_time()
        for t in threads:
            t.join()
        return summarize(traces, time.perf_counter() - t0, time.process_time() - cpu0)

    def close(self) -> None:
        self.client.close()


class GoClient:
    """The same streams from the Go client (`clients/go/cmd/spindle-loadgen`) against the same server: the
    server's gRPC cost without the Python client's share of the machine."""

    def __init__(self, target: str, chat: bool = False):
        import shutil
        import tempfile

        if shutil.which("go") is None:
            raise RuntimeError("no Go toolchain")
        self.binary = Path(tempfile.mkdtemp(prefix="spindle-loadgen-")) / "spindle-loadgen"
        subprocess.run(["go", "build", "-o", str(self.binary), "./cmd/spindle-loadgen"], cwd=ROOT / "clients" / "go",
                       check=True)
        self.target = target
        self.chat = chat

    def run(self, concurrency: int, max_tokens: int) -> dict[str, float]:
        import json

        out = subprocess.run([str(self.binary), "-target", self.target, "-streams", str(concurrency),
                              "-max-tokens", str(max_tokens), *(["-chat"] if self.chat else []), PROMPT],
                             check=True, capture_output=True, text=True)
        rep = json.loads(out.stdout.splitlines()[-1])
        return summarize([Trace(s["start"], s["tokens"]) for s in rep["streams"]], rep["wall_s"], rep["cpu_s"])

    def close(self) -> None:
        pass


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def parse_cpus(text: str) -> set[int]:
    """CPUs as taskset writes them: "0", "0,2", "0-3,6"."""
    cpus: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if m is None or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise argparse.ArgumentTypeError(f"a CPU list such as 0 or 0-3,6, got {text!r}")
        cpus.update(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    return cpus


def cpu_list(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def add_workload_arguments(p: argparse.ArgumentParser) -> None:
    """The workload's options (the model, its format, tokens per stream, streams at once), shared with
    bench/cotenant.py, which runs the same in-process workload."""
    p.add_argument("--model", default=None, help="artifact directory (default: the embedded model, compiled)")
    p.add_argument("--dtype", default="q4_1", help="dtype when compiling the default model (default q4_1)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_arguments(p)
    p.add_argument("--repeat", type=int, default=5, help="runs per cell; the table shows medians")
    p.add_argument("--no-go", action="store_true", help="leave out the Go client row")
    p.add_argument("--sync", action="store_true",
                   help="adds a row: the synchronous Python client (SyncClient.stream, a thread per stream)")
    p.add_argument("--chat", action="store_true",
                   help="send the prompt as one user message of a chat (rendered with the model's template)")
    p.add_argument("--server", action="append", default=[], metavar="ARGS",
                   help="adds rows: the Python client (and the Go client) on another server started with these "
                        "`spindle serve` flags (repeatable), e.g. --server='--stream-interval-ms 0'")
    p.add_argument("--engine-cpus", type=parse_cpus, metavar="LIST",
                   help="with --client-cpus: run the in-process engine and the servers on these CPUs (e.g. 0 or "
                        "0-5; one compute thread per CPU unless TVM_NUM_THREADS says otherwise), and the clients "
                        "on the --client-cpus")
    p.add_argument("--client-cpus", type=parse_cpus, metavar="LIST", help="the clients' CPUs (see --engine-cpus)")
    args = p.parse_args()
    if args.engine_cpus or args.client_cpus:
        if not (args.engine_cpus and args.client_cpus):
            p.error("--engine-cpus and --client-cpus go together")
        if args.engine_cpus & args.client_cpus:
            p.error(f"--engine-cpus and --client-cpus share CPUs {cpu_list(args.engine_cpus & args.client_cpus)}")
        missing = (args.engine_cpus | args.client_cpus) - os.sched_getaffinity(0)
        if missing:
            p.error(f"CPUs {cpu_list(missing)} are not available to this process")
        # the engines (this process's and the servers, which inherit this thread's CPUs, as every thread made
        # from it until the clients' turn below does) on their CPUs; the compute threads stay where they
        # start (TVM would bind them to CPUs of its own choosing)
        os.environ.setdefault("TVM_NUM_THREADS", str(len(args.engine_cpus)))
        os.environ["TVM_BIND_THREADS"] = "0"
        os.sched_setaffinity(0, args.engine_cpus)

    from spindle.cli import resolve_model
    from spindle.server.app import freeze_loaded_objects

    model_dir = resolve_model(args.model, args.dtype)
    print(f"model {model_dir.name}, prompt {len(PROMPT)} chars{' as a chat message' if args.chat else ''}, "
          f"{args.max_tokens} tokens per stream, median of {args.repeat} runs", flush=True)
    load_before = os.getloadavg()
    if args.client_cpus:
        print(f"engines on CPUs {cpu_list(args.engine_cpus)} ({os.environ['TVM_NUM_THREADS']} compute threads "
              f"each), clients on CPUs {cpu_list(args.client_cpus)}", flush=True)
    in_process = InProcess(model_dir, args.chat)
    servers = [OverGrpc(model_dir, *flags.split(), chat=args.chat) for flags in ["", *args.server]]
    if args.client_cpus:
        # this thread runs the Python clients; gRPC's threads, made from now on, and the Go client inherit it
        os.sched_setaffinity(0, args.client_cpus)
    runners = {"in-process": in_process, "gRPC": servers[0]}
    if args.sync:
        runners["gRPC, sync"] = OverGrpcSync(runners["gRPC"].target, args.chat)
    go = not args.no_go
    if go:
        try:
            runners["gRPC, Go"] = GoClient(runners["gRPC"].target, args.chat)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"(no Go client row: {exc})")
            go = False
    for flags, other in zip(args.server, servers[1:]):
        runners[f"Py, {flags.strip()}"] = other
        if go:
            runners[f"Go, {flags.strip()}"] = GoClient(other.target, args.chat)
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for runner in runners.values():
            runner.run(1, 4)  # warm up
        # what this process has loaded (the in-process engine's tokenizer, gRPC, the clients) out of the
        # collector's sight, as `spindle serve` does for its own: a full collection of it takes ~45 ms, a
        # stall of whichever path it lands in
        freeze_loaded_objects()
        # alternate the two paths, first one then the other going first (ABBA), so that drifting machine
        # load affects both alike
        order = list(runners.items())
        for i in range(args.repeat):
            for c in args.concurrency:
                for name, runner in (order if i % 2 == 0 else order[::-1]):
                    # the previous run's process keeps a core busy for ~150 ms after its last step (TVM's
                    # worker threads spin before they sleep): let it settle, so no run shares the cores
                    # with the one before it
                    time.sleep(SETTLE_S)
                    runs.setdefault((name, c), []).append(runner.run(c, args.max_tokens))
    finally:
        for runner in runners.values():
            runner.close()
    results = {key: median_of(value) for key, value in runs.items()}
    load_after = os.getloadavg()
    print("load average (1, 5, 15 min): before " + ", ".join(f"{x:.2f}" for x in load_before)
          + "; after " + ", ".join(f"{x:.2f}" for x in load_after) + f"; {os.cpu_count()} cores")

    width = max(10, *(len(name) for name in runners))
    header = (f"{'streams':>7} {'path':>{width}} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>8} {'ITL p99':>8} "
              f"{'gap p50':>8} {'msgs':>5} {'tok/s':>8} {'client':>7}")
    print(header)
    print("-" * len(header))
    paths = [name for name in runners if name != "in-process"]
    blank = f"{'':>9} {'':>8} {'':>8} {'':>8} {'':>5}"  # the columns between TTFT p50 and tok/s
    for c in args.concurrency:
        for name in runners:
            r = results[(name, c)]
            print(f"{c:>7} {name:>{width}} {r['ttft_p50']:>7.1f}ms {r['ttft_p99']:>7.1f}ms {r['itl_p50']:>6.2f}ms "
                  f"{r['itl_p99']:>6.2f}ms {r['gap_p50']:>6.1f}ms {r['msgs']:>5.1f} {r['tok_s']:>8.1f} "
                  + (f"{'':>7}" if math.isnan(r["client_cpu"]) else f"{r['client_cpu']:>6.2f}%"))
        base = results[("in-process", c)]
        for name in paths:
            grpc_r = results[(name, c)]
            print(f"{c:>7} {'cost':>{width}} {grpc_r['ttft_p50'] - base['ttft_p50']:>+7.1f}ms "
                  f"{blank} {100 * (grpc_r['tok_s'] / base['tok_s'] - 1):>+7.1f}%  {name}")
            # each round's runs are back to back: their difference cancels load that drifts between rounds
            pairs = list(zip(runs[("in-process", c)], runs[(name, c)]))
            ttfts = [g["ttft_p50"] - b["ttft_p50"] for b, g in pairs]
            toks = [100 * (g["tok_s"] / b["tok_s"] - 1) for b, g in pairs]
            print(f"{c:>7} {'per round':>{width}} {statistics.median(ttfts):>+7.1f}ms {blank} "
                  f"{statistics.median(toks):>+7.1f}%  {name}; middle half of the rounds: "
                  f"{pct(ttfts, 25):+.1f} to {pct(ttfts, 75):+.1f} ms, {pct(toks, 25):+.1f}% to {pct(toks, 75):+.1f}%")
    print("msgs: messages per stream (in process: callbacks carrying its tokens); ITL: the gap before a message "
          "shared evenly by its tokens; gap: the time between two messages of a stream, what its reader sees; "
          "client: the client process's CPU time during the run, as a share of the machine's cores (on the "
          "cores the model computes on, unless --client-cpus puts it elsewhere)")
    print("gRPC: the Python AsyncClient; gRPC, sync: the Python SyncClient (a thread per stream); gRPC, Go: the Go "
          "client (clients/go/cmd/spindle-loadgen) on the same server."
          " cost: the medians compared; per round: the median of each round's back-to-back difference "
          "(and its interquartile range)")
    for flags in args.server:
        print(f"Py / Go, {flags.strip()}: the Python / Go client on a server started with {flags.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
