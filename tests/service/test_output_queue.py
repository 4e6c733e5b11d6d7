"""Per-request output queues: bounded, never blocking the writer, merging deltas for a slow reader."""

from __future__ import annotations

import asyncio

from spindle_client.v1 import engine_pb2 as pb

from spindle.server.requests import OutputQueue, merge_deltas


def _delta(index, text, tok):
    return pb.OutputDelta(index=index, text=text, token_ids=[tok])


def test_slow_reader_gets_merged_messages_and_loses_nothing():
    async def run():
        q = OutputQueue(maxsize=4)
        for i in range(100):
            q.put([_delta(0, f"{i},", i), _delta(1, "x", 1000 + i)], None)
        q.put([], pb.FinalOutput(usage=pb.Usage(completion_tokens=200)))
        assert len(q) == 4 and q.merged > 0
        items = [await q.get() for _ in range(4)]
        return items

    items = asyncio.run(run())
    text = "".join(d.text for deltas, _ in items for d in deltas if d.index == 0)
    toks = [t for deltas, _ in items for d in deltas if d.index == 0 for t in d.token_ids]
    assert text == "".join(f"{i}," for i in range(100))
    assert toks == list(range(100))
    assert sum(len(d.token_ids) for deltas, _ in items for d in deltas if d.index == 1) == 100
    assert items[-1][1] is not None and all(final is None for _, final in items[:-1])


def test_reader_waits_for_the_writer():
    async def run():
        q = OutputQueue(maxsize=2)
        getter = asyncio.ensure_future(q.get())
        await asyncio.sleep(0.01)
        assert not getter.done()
        q.put([_delta(0, "a", 1)], None)
        return await asyncio.wait_for(getter, 1)

    deltas, final = asyncio.run(run())
    assert deltas[0].text == "a" and final is None


def test_merge_does_not_modify_shared_deltas():
    a = _delta(0, "a", 1)
    merged = merge_deltas([a], [_delta(0, "b", 2)])
    assert merged[0].text == "ab" and list(merged[0].token_ids) == [1, 2]
    assert a.text == "a" and list(a.token_ids) == [1]


def test_get_all_merges_what_is_queued_up_to_the_final():
    async def run():
        q = OutputQueue(maxsize=8)
        for i in range(3):
            q.put([_delta(0, str(i), i)], None)
        q.put([], pb.FinalOutput())
        return await q.get_all(), len(q)

    (deltas, final), left = asyncio.run(run())
    assert deltas[0].text == "012" and list(deltas[0].token_ids) == [0, 1, 2]
    assert final is not None and left == 0
