"""AsyncClient against the threaded server: same surface and typed errors as SyncClient."""

from __future__ import annotations

import asyncio

import pytest

from spindle_client import AlreadyExistsError, AsyncClient, InvalidArgumentError, SyncClient

PROMPT = "Once upon a time"


def test_async_generate_stream_follow_and_errors(threaded_server):
    async def run():
        async with AsyncClient(threaded_server.target, timeout=60) as c:
            r = await c.generate(PROMPT, max_tokens=8, temperature=0)
            s = c.stream(PROMPT, max_tokens=8, temperature=0)
            pieces = [d.text async for d in s]
            assert "".join(pieces) == r.text and s.result.token_ids == r.token_ids
            assert await c.tokenize(PROMPT) == r.prompt_token_ids
            assert await c.detokenize(r.token_ids, skip_special_tokens=True) == r.text
            assert (await c.model_info()).vocab_size == 384
            assert await c.health() == "SERVING"

            added = await c.add_request(PROMPT, request_id="async-1", max_tokens=200, temperature=0,
                                        ignore_eos=True)
            with pytest.raises(AlreadyExistsError):
                await c.add_request(PROMPT, request_id="async-1")
            f = c.follow(added.request_id)
            async for _ in f:
                pass
            assert f.result.finish_reason == "length"

            with pytest.raises(InvalidArgumentError) as info:
                await c.generate(PROMPT, top_p=0.0)
            assert info.value.fields == ["config.top_p"]
            m = await c.metrics()
            assert m.live_requests == 0 and m.running_requests == 0
            return r

    r = asyncio.run(run())
    with SyncClient(threaded_server.target) as c:
        assert c.generate(PROMPT, max_tokens=8, temperature=0).token_ids == r.token_ids
