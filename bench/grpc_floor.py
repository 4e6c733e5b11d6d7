"""What grpc.aio and the clients cost alone: time to first token of N concurrent streams against a grpc.aio
EngineService whose Generate answers at once (one token, then the final message; no engine, no tokenizer).

This is the floor under `bench_grpc.py`'s time-to-first-token cost: a Spindle server does at least this
much per stream before and after the engine. The server runs in its own process (the no-op servicer in
``--serve`` mode), the clients in this one (the Python AsyncClient) or their own (the Go loadgen). Two
servers run side by side, one accepting calls the stock grpc.aio way (one requested call at a time) and
one with ``--ahead`` more Generate calls requested ahead (``spindle.server.accept``, what ``spindle serve``
does); bursts alternate between them.

    python bench/grpc_floor.py [--streams 16] [--bursts 30] [--ahead 15]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

from bench_grpc import PROMPT, GoClient  # sets up the import paths


async def serve(ahead: int) -> None:
    import grpc  # pylint: disable=import-outside-toplevel
    from spindle_client.v1 import engine_pb2 as pb  # pylint: disable=import-outside-toplevel
    from spindle_client.v1 import engine_pb2_grpc as pb_grpc  # pylint: disable=import-outside-toplevel

    from spindle.server.accept import AcceptAhead, HandlerCapture  # pylint: disable=import-outside-toplevel
    from spindle.server.app import GENERATE  # pylint: disable=import-outside-toplevel

    class NoOp(pb_grpc.EngineServiceServicer):
        async def Generate(self, request, context):  # noqa: N802 - the RPC's name
            yield pb.GenerateResponse(request_id=request.request_id,
                                      deltas=[pb.OutputDelta(index=0, text=" x", token_ids=[5])])
            yield pb.GenerateResponse(request_id=request.request_id, final=pb.FinalOutput())

    server = grpc.aio.server()
    services = HandlerCapture(server)
    pb_grpc.add_EngineServiceServicer_to_server(NoOp(), services)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    accept = AcceptAhead(server, {GENERATE: services.handlers[GENERATE]}, ahead)
    if ahead and not accept.start():
        raise SystemExit("this grpcio lacks what spindle.server.accept uses")
    print(f"PORT {port}", flush=True)
    await server.wait_for_termination()


async def python_client(target: str, streams: int) -> float:
    """The median time to first message of one burst of Python AsyncClient streams."""
    from spindle_client import AsyncClient  # pylint: disable=import-outside-toplevel

    async with AsyncClient(target, timeout=60) as client:
        await client.generate(PROMPT, max_tokens=1)  # connect

        async def one() -> float:
            t = time.perf_counter()
            async for _ in client.stream(PROMPT, max_tokens=64, temperature=0, ignore_eos=True):
                return (time.perf_counter() - t) * 1e3
            raise RuntimeError("the stream ended without a message")

        return statistics.median(await asyncio.gather(*[one() for _ in range(streams)]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--bursts", type=int, default=30)
    p.add_argument("--ahead", type=int, default=15, help="Generate calls requested ahead on the second server")
    p.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return 0
    procs, targets = [], {}
    try:
        for ahead in (0, args.ahead):
            proc = subprocess.Popen([sys.executable, __file__, "--serve", str(ahead)], stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            targets[ahead] = f"127.0.0.1:{int(proc.stdout.readline().split()[1])}"
        try:
            go = GoClient(targets[0])
        except RuntimeError:  # no Go toolchain
            go = None
        rows: dict[tuple[str, int], list[float]] = {}
        for i in range(args.bursts):
            for ahead in (tuple(targets) if i % 2 == 0 else tuple(targets)[::-1]):
                rows.setdefault(("Python AsyncClient", ahead), []).append(
                    asyncio.run(python_client(targets[ahead], args.streams)))
                if go is not None:
                    go.target = targets[ahead]
                    rows.setdefault(("Go client", ahead), []).append(go.run(args.streams, 1)["ttft_p50"])
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
    print(f"no-op grpc.aio EngineService, {args.streams} concurrent streams, {args.bursts} bursts: "
          "time to first message, the median stream of a burst")
    for (name, ahead), p50s in rows.items():
        how = f"{ahead + 1} calls requested at a time" if ahead else "grpc.aio's accept loop alone"
        print(f"{name:>20}, {how:>36}: median {statistics.median(p50s):.2f} ms "
              f"(bursts {min(p50s):.2f}-{max(p50s):.2f})")
    if go is None:
        print("(no Go client rows: no Go toolchain)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
