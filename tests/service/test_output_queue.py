"""Per-request output queues: bounded, never blocking the writer, merging deltas for a slow reader; the
request table delivering whole engine batches to them in order."""

from __future__ import annotations

import asyncio
import time

from spindle_client.v1 import engine_pb2 as pb

from spindle.server.requests import Delta, OutputQueue, Pacing, build_response, merge_deltas


def _delta(index, text, tok):
    return Delta(index, text, [tok])


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


def test_build_response_sets_each_delta_and_the_final():
    lp = pb.TokenLogprob(token_id=7, token="x", logprob=-0.5)
    msg = build_response(pb.GenerateResponse, "r", [Delta(0, "ab", [1, 2]), Delta(1, "", [3], [lp])],
                         pb.FinalOutput(usage=pb.Usage(completion_tokens=3)))
    assert msg.request_id == "r" and [d.index for d in msg.deltas] == [0, 1]
    assert msg.deltas[0].text == "ab" and list(msg.deltas[0].token_ids) == [1, 2]
    assert msg.deltas[1].logprobs[0].token_id == 7 and msg.final.usage.completion_tokens == 3
    assert not build_response(pb.RequestOutput, "r", [], None).HasField("final")


def test_a_waiting_reader_wakes_once_for_everything_queued_before_it_runs():
    async def run():
        q = OutputQueue(maxsize=64)
        getter = asyncio.ensure_future(q.get_all())
        await asyncio.sleep(0)
        for i in range(5):  # five puts before the reader gets to run: one wake-up, one merged item
            q.put([_delta(0, str(i), i)], None)
        first = await getter
        q.put([], pb.FinalOutput())
        return first, await q.get_all()

    (deltas, final), (rest, last) = asyncio.run(run())
    assert deltas == [Delta(0, "01234", [0, 1, 2, 3, 4])] and final is None
    assert rest == [] and last is not None


def test_stream_interval_holds_tokens_back_until_enough_are_queued():
    async def run():
        q = OutputQueue(maxsize=64, pacing=Pacing(tokens=3))
        seen = []
        q.put([_delta(0, "a", 1)], None)
        seen.append(await asyncio.wait_for(q.get_all(), 1))  # the first tokens are never held back
        getter = asyncio.ensure_future(q.get_all())
        for i in range(2):
            q.put([_delta(0, str(i), 10 + i)], None)
            await asyncio.sleep(0.01)
            assert not getter.done(), "woken before stream_interval tokens were queued"
        q.put([_delta(0, "2", 12)], None)
        seen.append(await asyncio.wait_for(getter, 1))
        q.put([_delta(0, "z", 13)], None)
        getter = asyncio.ensure_future(q.get_all())
        await asyncio.sleep(0.01)
        assert not getter.done()
        q.put([], pb.FinalOutput())  # the final goes out at once with whatever is queued
        seen.append(await asyncio.wait_for(getter, 1))
        return seen

    (first, f1), (middle, f2), (last, f3) = asyncio.run(run())
    assert first == [Delta(0, "a", [1])] and f1 is None
    assert middle == [Delta(0, "012", [10, 11, 12])] and f2 is None
    assert last == [Delta(0, "z", [13])] and f3 is not None


def test_stream_interval_counts_tokens_of_every_branch():
    async def run():
        q = OutputQueue(maxsize=64, pacing=Pacing(tokens=4))
        q.put([_delta(0, "a", 1)], None)
        await q.get_all()
        q.put([_delta(0, "b", 2), _delta(1, "c", 3)], None)
        getter = asyncio.ensure_future(q.get_all())
        await asyncio.sleep(0.01)
        held = not getter.done()
        q.put([_delta(0, "d", 4), _delta(1, "e", 5)], None)
        return held, await asyncio.wait_for(getter, 1)

    held, (deltas, final) = asyncio.run(run())
    assert held and final is None
    assert deltas == [Delta(0, "bd", [2, 4]), Delta(1, "ce", [3, 5])]


def test_stream_interval_s_paces_messages_in_time():
    async def run():
        q = OutputQueue(maxsize=64, pacing=Pacing(interval_s=0.5))
        q.put([_delta(0, "a", 1)], None)
        first = await asyncio.wait_for(q.get_all(), 1)  # the first message is never held back
        t_first = time.monotonic()
        getter = asyncio.ensure_future(q.get_all())
        q.put([_delta(0, "b", 2)], None)
        await asyncio.sleep(0.05)
        held = not getter.done()
        q.put([_delta(0, "c", 3)], None)
        second = await asyncio.wait_for(getter, 3)  # a timer wakes the reader once the interval is over
        waited = time.monotonic() - t_first
        getter = asyncio.ensure_future(q.get_all())
        q.put([_delta(0, "d", 4)], None)
        await asyncio.sleep(0.01)
        held_again = not getter.done()
        t = time.monotonic()
        q.put([], pb.FinalOutput())  # the final goes out at once with whatever is queued
        third = await asyncio.wait_for(getter, 1)
        return first, held, second, waited, held_again, third, time.monotonic() - t

    first, held, second, waited, held_again, third, final_wait = asyncio.run(run())
    assert first == ([Delta(0, "a", [1])], None)
    assert held and second == ([Delta(0, "bc", [2, 3])], None) and waited >= 0.49
    assert held_again and third[0] == [Delta(0, "d", [4])] and third[1] is not None and final_wait < 0.1


def test_stream_interval_s_wakes_a_reader_that_arrives_after_the_tokens():
    async def run():
        q = OutputQueue(maxsize=64, pacing=Pacing(interval_s=0.4))
        q.put([_delta(0, "a", 1)], None)
        await q.get_all()
        t = time.monotonic()
        q.put([_delta(0, "b", 2)], None)  # nobody waiting: the reader comes later, inside the interval
        await asyncio.sleep(0.02)
        early = await asyncio.wait_for(q.get_all(), 2)
        early_wait = time.monotonic() - t
        q.put([_delta(0, "c", 3)], None)
        await asyncio.sleep(0.45)  # the reader is late: nothing left to wait for
        t = time.monotonic()
        late = await asyncio.wait_for(q.get_all(), 1)
        return early, early_wait, late, time.monotonic() - t

    early, early_wait, late, late_wait = asyncio.run(run())
    assert early == ([Delta(0, "b", [2])], None) and early_wait >= 0.39
    assert late == ([Delta(0, "c", [3])], None) and late_wait < 0.2
