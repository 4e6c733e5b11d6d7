"""Calls requested ahead (spindle.server.accept): a burst of Generate calls is taken by the extra accept
tasks, every stream is answered in full, and the server stops cleanly with them."""

from __future__ import annotations

import asyncio

import pytest

from spindle.server import accept
from spindle.server.app import GENERATE, ServerOptions, SpindleServer
from spindle_client import AsyncClient, UnavailableError



def test_installed_grpcio_has_what_accept_ahead_uses():
    # a grpcio release that renames or reshapes these internals turns the feature off (with a warning);
    # this test says so instead of letting it pass unnoticed
    assert accept.supported() is None


def _serve(tiny_model_dir, **options):
    return SpindleServer(tiny_model_dir, ServerOptions(port=0, **options))


def test_a_burst_of_streams_is_accepted_ahead_and_answered(tiny_model_dir):
    async def main():
        server = _serve(tiny_model_dir, accept_ahead=7)
        port = await server.start()
        try:
            assert server.accept_ahead.active and server.accept_ahead.methods.keys() == {GENERATE}
            async with AsyncClient(f"127.0.0.1:{port}", timeout=60) as client:
                results = await asyncio.gather(*[
                    client.generate(token_ids=[3 + i, 4, 5], max_tokens=4, temperature=0, ignore_eos=True)
                    for i in range(16)])
                alone = await client.generate(token_ids=[3, 4, 5], max_tokens=4, temperature=0, ignore_eos=True)
            assert all(len(r.token_ids) == 4 and r.finish_reason == "length" for r in results)
            assert results[0].token_ids == alone.token_ids
            # the extra accept tasks took calls of the burst (grpc.aio's own loop takes the others)
            assert server.accept_ahead.accepted >= 1
            m = await server.servicer.host.metrics()
            assert m.running == 0 and m.kv_pages_used == 0
        finally:
            await server.stop()
        assert not server.accept_ahead.active
        with pytest.raises(UnavailableError):  # the port is closed: nothing accepts calls any more
            async with AsyncClient(f"127.0.0.1:{port}", timeout=2) as client:
                await client.generate(token_ids=[3, 4], max_tokens=1)

    asyncio.run(main())


def test_without_the_internals_the_server_accepts_the_stock_way(tiny_model_dir, monkeypatch, caplog):
    monkeypatch.setattr(accept, "supported", lambda: "grpc._cython.cygrpc._handle_rpc takes something else")

    async def main():
        server = _serve(tiny_model_dir)
        port = await server.start()
        try:
            assert not server.accept_ahead.active
            async with AsyncClient(f"127.0.0.1:{port}", timeout=60) as client:
                results = await asyncio.gather(*[client.generate(token_ids=[3, 4, 5], max_tokens=3, temperature=0)
                                                 for _ in range(4)])
            assert all(len(r.token_ids) >= 1 for r in results)
            assert server.accept_ahead.accepted == 0
        finally:
            await server.stop()

    asyncio.run(main())
    assert "accepting one call at a time" in caplog.text


def test_accept_ahead_zero_keeps_grpc_aio_alone(tiny_model_dir):
    async def main():
        server = _serve(tiny_model_dir, accept_ahead=0)
        port = await server.start()
        try:
            assert not server.accept_ahead.active
            async with AsyncClient(f"127.0.0.1:{port}", timeout=60) as client:
                r = await client.generate(token_ids=[3, 4, 5], max_tokens=2, temperature=0)
            assert len(r.token_ids) >= 1
        finally:
            await server.stop()

    asyncio.run(main())


@pytest.mark.parametrize("bad", [-1, 1025, 2.5, True, "4"])
def test_accept_ahead_is_checked(tiny_model_dir, bad):
    with pytest.raises(ValueError, match="accept_ahead"):
        SpindleServer(tiny_model_dir, ServerOptions(accept_ahead=bad))
