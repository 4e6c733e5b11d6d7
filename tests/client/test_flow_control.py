"""The clients' HTTP/2 flow control: fixed windows, no bandwidth-delay probe pings while a stream is read.

A relay between client and server parses the frames the client sends. With gRPC's default channel
options the client answers a stream of small messages with PING frames (bandwidth-delay probes, each one
a round trip the server must answer); the Spindle client's channel sends none.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import threading
import time
from concurrent import futures

import grpc
import pytest

from spindle_client import SyncClient
from spindle_client.v1 import engine_pb2 as pb
from spindle_client.v1 import engine_pb2_grpc as pb_grpc

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PING, ACK = 0x6, 0x1
MESSAGES = 40


class _Streamer(pb_grpc.EngineServiceServicer):
    """Streams MESSAGES small deltas a few milliseconds apart, like a paced generation."""

    def Generate(self, request, context):  # noqa: N802 - the RPC's name
        for i in range(MESSAGES):
            yield pb.GenerateResponse(request_id="r", deltas=[pb.OutputDelta(index=0, text=" x", token_ids=[i])])
            time.sleep(0.004)
        yield pb.GenerateResponse(request_id="r", final=pb.FinalOutput(
            branches=[pb.BranchResult(index=0, finish_reason=pb.FINISH_REASON_LENGTH)]))


class ClientFrames:
    """A TCP relay to `upstream` that counts the HTTP/2 frames clients send: (type, is ACK) -> count."""

    def __init__(self, upstream: int):
        self.upstream = upstream
        self.frames: collections.Counter = collections.Counter()
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._relay, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def pipe(src, dst, parse):
            buf = b""
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                    if parse:
                        buf = self._count(buf + data)
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False),
                             return_exceptions=True)

    def _count(self, buf: bytes) -> bytes:
        if buf.startswith(PREFACE):
            buf = buf[len(PREFACE):]
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            kind, flags = struct.unpack("BB", buf[3:5])
            if len(buf) < 9 + length:
                break
            self.frames[(kind, bool(flags & ACK) if kind == PING else False)] += 1
            buf = buf[9 + length:]
        return buf

    def pings(self) -> int:
        return self.frames[(PING, False)]

    def close(self) -> None:
        async def shutdown():
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def upstream():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_EngineServiceServicer_to_server(_Streamer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(None)


def test_default_grpc_channel_pings_while_reading_a_stream(upstream):
    """The control: the relay sees the probe pings of a channel with gRPC's default options."""
    relay = ClientFrames(upstream)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{relay.port}") as channel:
            replies = list(pb_grpc.EngineServiceStub(channel).Generate(pb.GenerateRequest()))
        assert len(replies) == MESSAGES + 1
        assert relay.pings() >= 1, relay.frames
    finally:
        relay.close()


def test_spindle_client_reads_a_stream_without_probe_pings(upstream):
    relay = ClientFrames(upstream)
    try:
        with SyncClient(f"127.0.0.1:{relay.port}") as client:
            stream = client.stream("x")
            deltas = list(stream)
        assert len(deltas) == MESSAGES and stream.result.finish_reason == "length"
        assert relay.frames[(0x1, False)] >= 1  # the relay parsed the client's frames (its HEADERS)
        assert relay.pings() == 0, relay.frames
    finally:
        relay.close()
