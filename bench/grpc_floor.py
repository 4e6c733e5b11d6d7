"""What grpc.aio and the clients cost alone: time to first token of N concurrent streams against a grpc.aio
EngineService whose Generate answers at once (one token, then the final message; no engine, no tokenizer).

This is the floor under `bench_grpc.py`'s time-to-first-token cost: a Spindle server does at least this
much per stream before and after the engine. The server runs in its own process (the no-op servicer in
``--serve`` mode), the clients in this one (the Python AsyncClient) or their own (the Go loadgen).

    python bench/grpc_floor.py [--streams 16] [--bursts 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

from bench_grpc import PROMPT, GoClient  # sets up the import paths


async def serve() -> None:
    import grpc  # pylint: disable=import-outside-toplevel
    from spindle_client.v1 import engine_pb2 as pb  # pylint: disable=import-outside-toplevel
    from spindle_client.v1 import engine_pb2_grpc as pb_grpc  # pylint: disable=import-outside-toplevel

    class NoOp(pb_grpc.EngineServiceServicer):
        async def Generate(self, request, context):  # noqa: N802 - the RPC's name
            yield pb.GenerateResponse(request_id=request.request_id,
                                      deltas=[pb.OutputDelta(index=0, text=" x", token_ids=[5])])
            yield pb.GenerateResponse(request_id=request.request_id, final=pb.FinalOutput())

    server = grpc.aio.server()
    pb_grpc.add_EngineServiceServicer_to_server(NoOp(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"PORT {port}", flush=True)
    await server.wait_for_termination()


async def python_client(target: str, streams: int, bursts: int) -> list[float]:
    from spindle_client import AsyncClient  # pylint: disable=import-outside-toplevel

    async with AsyncClient(target, timeout=60) as client:
        await client.generate(PROMPT, max_tokens=1)  # connect

        async def one() -> float:
            t = time.perf_counter()
            async for _ in client.stream(PROMPT, max_tokens=64, temperature=0, ignore_eos=True):
                return (time.perf_counter() - t) * 1e3
            raise RuntimeError("the stream ended without a message")

        p50s = []
        for _ in range(bursts):
            p50s.append(statistics.median(await asyncio.gather(*[one() for _ in range(streams)])))
            await asyncio.sleep(0.05)
        return p50s


def go_client(target: str, streams: int, bursts: int) -> list[float] | None:
    try:
        client = GoClient(target)
    except RuntimeError:  # no Go toolchain
        return None
    return [client.run(streams, 1)["ttft_p50"] for _ in range(bursts)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--bursts", type=int, default=30)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve())
        return 0
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        target = f"127.0.0.1:{int(proc.stdout.readline().split()[1])}"
        rows = {"Python AsyncClient": asyncio.run(python_client(target, args.streams, args.bursts)),
                "Go client": go_client(target, args.streams, args.bursts)}
    finally:
        proc.terminate()
        proc.wait()
    print(f"no-op grpc.aio EngineService, {args.streams} concurrent streams, {args.bursts} bursts: "
          "time to first token, the median stream of a burst")
    for name, p50s in rows.items():
        if p50s is None:
            print(f"{name:>20}: (no Go toolchain)")
            continue
        print(f"{name:>20}: median {statistics.median(p50s):.2f} ms (bursts {min(p50s):.2f}-{max(p50s):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
