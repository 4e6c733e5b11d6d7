"""Client cancel, disconnect and deadline abort the engine request; its KV pages are freed."""

from __future__ import annotations

import time

import grpc
import pytest

from spindle_client import DeadlineExceededError, SyncClient
from spindle_client.v1 import engine_pb2 as pb
from spindle_client.v1 import engine_pb2_grpc as pb_grpc

PROMPT = "Once upon a time"
LONG = dict(max_tokens=480, temperature=0, ignore_eos=True)


def _idle(client, timeout_s: float = 10.0):
    """Metrics once no request is live on the server (or after the timeout)."""
    deadline = time.monotonic() + timeout_s
    m = client.metrics()
    while m.live_requests and time.monotonic() < deadline:
        time.sleep(0.005)
        m = client.metrics()
    return m


def _settled(client, before_aborted: int, timeout_s: float = 10.0):
    """Metrics once the server has ended the RPC (no live request): the engine must be idle by then."""
    m = _idle(client, timeout_s)
    assert m.live_requests == 0, m
    assert m.running_requests == 0 and m.waiting_requests == 0, m
    assert m.kv_pages_used == 0, m
    assert m.aborted_requests > before_aborted, m
    return m


def test_cancel_aborts_the_engine_request(client):
    before = client.metrics().aborted_requests
    s = client.stream(PROMPT, **LONG)
    it = iter(s)
    first = next(it)
    assert first.token_ids
    assert client.metrics().kv_pages_used > 0
    s.cancel()
    with pytest.raises(Exception):
        for _ in it:
            pass
    _settled(client, before)


def test_disconnect_aborts_the_engine_request(threaded_server, client):
    before = client.metrics().aborted_requests
    channel = grpc.insecure_channel(threaded_server.target)
    stub = pb_grpc.EngineServiceStub(channel)
    call = stub.Generate(pb.GenerateRequest(prompt=pb.Prompt(text=PROMPT),
                                            config=pb.GenerationConfig(**LONG)))
    next(call)
    channel.close()
    _settled(client, before)


def test_deadline_aborts_the_engine_request(client):
    # The tiny model generates LONG in ~50 ms, so a fixed deadline may fire before the request reaches
    # the engine or after it has finished. Adjust it until it fires mid-generation: the engine must then
    # count an abort (a request the deadline did not abort would count as finished instead).
    timeout = 0.03
    for _ in range(12):
        before = client.metrics()
        try:
            client.generate(PROMPT, timeout=timeout, **LONG)
        except DeadlineExceededError:
            m = _idle(client)
            if m.aborted_requests > before.aborted_requests:
                _settled(client, before.aborted_requests)
                assert m.finished_requests == before.finished_requests, m
                return
            timeout *= 1.5  # it expired before the engine had the request
        else:
            timeout /= 2  # it finished before its deadline
    pytest.fail("no deadline fired while the engine was generating")


def test_abort_request_ends_a_followed_request_with_abort(client):
    client.add_request(PROMPT, request_id="to-abort", **LONG)
    s = client.follow("to-abort")
    it = iter(s)
    next(it)
    assert client.abort_request("to-abort") is True
    for _ in it:
        pass
    assert s.result.finish_reason == "abort"
    m = client.metrics()
    assert m.live_requests == 0 and m.running_requests == 0 and m.kv_pages_used == 0


def test_reset_aborts_everything(client):
    """Reset ends every live stream with abort and counts them; a request that won the race ends by length."""
    streams = [client.stream(PROMPT, request_id=f"reset-{i}", **LONG) for i in range(2)]
    iters = [iter(s) for s in streams]
    for it in iters:
        assert next(it).token_ids   # both requests are running
    aborted = client.reset()
    for it in iters:
        for _ in it:
            pass
    reasons = [s.result.finish_reason for s in streams]
    assert set(reasons) <= {"abort", "length"}, reasons
    assert aborted == reasons.count("abort"), (aborted, reasons)
    for s in streams:
        if s.result.finish_reason == "length":
            assert len(s.result.token_ids) == LONG["max_tokens"]
    m = client.metrics()
    assert m.live_requests == 0 and m.running_requests == 0 and m.kv_pages_used == 0


def test_reset_aborts_everything_in_stepped_mode(stepped_client):
    """In stepped mode nothing advances without Step, so the count is exact."""
    stepped_client.add_request(PROMPT, request_id="reset-1", **LONG)
    stepped_client.add_request(PROMPT, request_id="reset-2", **LONG)
    stepped_client.step()
    assert stepped_client.reset() == 2
    assert not stepped_client.step().outputs
    m = stepped_client.metrics()
    assert m.live_requests == 0 and m.running_requests == 0 and m.waiting_requests == 0
    assert m.kv_pages_used == 0


def test_metrics_count_live_requests_before_the_engine_figures(server_thread, tiny_model_dir):
    """A request that ends while Metrics waits for the engine's figures is still counted live in that answer:
    the count is never newer than the engine's snapshot, so an answer with no live request never shows one
    still running in the engine (what `_settled` relies on)."""
    srv = server_thread(tiny_model_dir, mode="threaded")
    try:
        host = srv.server.servicer.host
        real = host.metrics
        with SyncClient(srv.target, timeout=60) as c:
            s = c.stream(PROMPT, **LONG)
            it = iter(s)
            next(it)
            rid = s.request_id
            req = srv.run(srv.table.live.get, rid)

            async def figures_then_the_end():
                m = await real()  # taken while the request runs
                host.abort_request(rid)
                await req.done.wait()  # its end reaches the server before the answer is built
                return m

            srv.run(setattr, host, "metrics", figures_then_the_end)
            try:
                m = c.metrics()
            finally:
                srv.run(delattr, host, "metrics")
            assert m.running_requests == 1 and m.live_requests == 1, m
            for _ in it:
                pass
            assert s.result.finish_reason == "abort"
            settled = _idle(c)
            assert settled.live_requests == 0 and settled.running_requests == 0 and settled.kv_pages_used == 0
    finally:
        srv.stop()
