"""Stepped mode: the engine advances only on Step; a generation completes through AddRequest + Step."""

from __future__ import annotations

from spindle_client import ResultBuilder, SyncClient

PROMPT = "Once upon a time"


def _run_to_end(client, request_ids, max_steps=500):
    builders = {rid: ResultBuilder() for rid in request_ids}
    steps = 0
    while any(b.final is None for b in builders.values()):
        resp = client.step()
        steps += 1
        assert steps < max_steps
        for out in resp.outputs:
            if out.request_id in builders:
                builders[out.request_id].add(out)
    return {rid: b.result() for rid, b in builders.items()}, resp


def test_generation_through_add_request_and_step(stepped_client, threaded_server):
    with SyncClient(threaded_server.target) as threaded:
        reference = threaded.generate(PROMPT, max_tokens=10, temperature=0)
    added = stepped_client.add_request(PROMPT, request_id="s-1", max_tokens=10, temperature=0)
    assert added.effective_config.max_tokens == 10
    m = stepped_client.metrics()
    assert m.waiting_requests + m.running_requests == 1  # nothing ran before the first Step
    results, last = _run_to_end(stepped_client, ["s-1"])
    r = results["s-1"]
    assert r.token_ids == reference.token_ids and r.text == reference.text
    assert r.finish_reason == "length" and r.usage.completion_tokens == 10
    assert last.engine_empty
    m = stepped_client.metrics()
    assert m.running_requests == 0 and m.kv_pages_used == 0 and m.live_requests == 0


def test_stop_string_in_stepped_mode_finishes_within_the_same_step(stepped_client):
    full = _run_to_end(stepped_client, [stepped_client.add_request(
        PROMPT, max_tokens=30, temperature=0, ignore_eos=True).request_id])[0]
    text = next(iter(full.values())).text
    stop = text[3:6]
    rid = stepped_client.add_request(PROMPT, max_tokens=30, temperature=0, ignore_eos=True,
                                     stop_strings=[stop]).request_id
    r, last = _run_to_end(stepped_client, [rid])
    r = r[rid]
    assert r.finish_reason == "stop" and r.matched_stop == stop
    assert r.text == text[:text.find(stop)]
    assert r.usage.completion_tokens < 30
    # the Step whose output held the stop string already aborted the request in the engine
    m = stepped_client.metrics()
    assert m.running_requests == 0 and m.waiting_requests == 0 and m.kv_pages_used == 0 and m.live_requests == 0
    # the engine's own report of that abort, in the next Step, is not passed on as a second finish
    nxt = stepped_client.step()
    assert all(o.request_id != rid for o in nxt.outputs) and nxt.engine_empty


def test_abort_in_stepped_mode(stepped_client):
    rid = stepped_client.add_request(PROMPT, max_tokens=50, temperature=0).request_id
    stepped_client.step()
    assert stepped_client.abort_request(rid) is True
    results, _ = _run_to_end(stepped_client, [rid])
    assert results[rid].finish_reason == "abort"
    m = stepped_client.metrics()
    assert m.running_requests == 0 and m.kv_pages_used == 0
