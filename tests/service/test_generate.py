"""Generation over a real channel against the tiny compiled model on the real engine."""

from __future__ import annotations

import asyncio
import time

import pytest

from spindle_client import AsyncClient, SyncClient

PROMPT = "Once upon a time"


def test_greedy_generate_matches_stream_and_is_deterministic(client):
    a = client.generate(PROMPT, max_tokens=12, temperature=0)
    s = client.stream(PROMPT, max_tokens=12, temperature=0)
    deltas = list(s)
    assert a.finish_reason == "length"
    assert len(a.token_ids) == 12 == a.usage.completion_tokens
    assert s.result.token_ids == a.token_ids and s.result.text == a.text
    assert "".join(d.text for d in deltas) == a.text
    assert [t for d in deltas for t in d.token_ids] == a.token_ids
    assert a.prompt_token_ids == client.tokenize(PROMPT)
    assert a.usage.prompt_tokens == len(a.prompt_token_ids)
    assert 0 < a.usage.time_to_first_token_ms <= a.usage.total_time_ms
    assert a.text == client.detokenize(a.token_ids, skip_special_tokens=True)


def test_token_id_prompt_equals_text_prompt(client):
    ids = client.tokenize(PROMPT)
    by_text = client.generate(PROMPT, max_tokens=6, temperature=0)
    by_ids = client.generate(token_ids=ids, max_tokens=6, temperature=0)
    assert by_ids.token_ids == by_text.token_ids


def test_chat_messages_use_the_chat_template(client):
    messages = [{"role": "user", "content": "hello there"}]
    r = client.generate(messages, max_tokens=4, temperature=0)
    assert r.prompt_token_ids == client.tokenize(messages=messages)
    rendered = client.detokenize(r.prompt_token_ids)
    assert "<|im_start|>user\nhello there<|im_end|>" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")


def test_effective_config_reports_the_seed_and_replays(client):
    first = client.generate(PROMPT, max_tokens=10, temperature=1.0)
    seed = first.seed
    assert first.effective_config.HasField("seed")
    again = client.generate(PROMPT, max_tokens=10, temperature=1.0, seed=seed)
    assert again.token_ids == first.token_ids
    assert again.seed == seed
    assert client.generate(PROMPT, max_tokens=10, temperature=1.0).seed != seed  # each request draws its own
    cfg = first.effective_config
    assert (cfg.n, cfg.top_p, cfg.top_k, cfg.max_tokens) == (1, 1.0, 0, 10)


def test_stop_string_ends_generation_without_leaking_its_text(client):
    full = client.generate(PROMPT, max_tokens=40, temperature=0, ignore_eos=True)
    assert len(full.text) > 8
    stop = full.text[4:7]
    cut = full.text.find(stop)
    r = client.generate(PROMPT, max_tokens=40, temperature=0, ignore_eos=True, stop_strings=[stop])
    assert r.finish_reason == "stop"
    assert r.matched_stop == stop
    assert r.text == full.text[:cut]
    assert stop not in r.text
    # the tokens end with the one that completed the stop string, even when a message carries several
    n = len(r.token_ids)
    assert 0 < n < 40 and r.token_ids == full.token_ids[:n]
    assert stop in client.detokenize(full.token_ids[:n]) and stop not in client.detokenize(full.token_ids[:n - 1])


def test_stop_token_id_ends_generation(client):
    full = client.generate(PROMPT, max_tokens=20, temperature=0, ignore_eos=True)
    stop_tok = full.token_ids[3]
    first = full.token_ids.index(stop_tok)
    r = client.generate(PROMPT, max_tokens=20, temperature=0, ignore_eos=True, stop_token_ids=[stop_tok])
    assert r.finish_reason == "stop"
    assert r.matched_stop == stop_tok
    assert r.token_ids == full.token_ids[:first]  # the stop token itself is not part of the output

    # several stop tokens: the one that matched is reported
    other = next(t for t in range(5, 100) if t not in full.token_ids)
    r = client.generate(PROMPT, max_tokens=20, temperature=0, ignore_eos=True, stop_token_ids=[other, stop_tok])
    assert r.finish_reason == "stop"
    assert r.matched_stop == stop_tok
    assert r.token_ids == full.token_ids[:first]


def test_logprobs_and_top_logprobs(client):
    r = client.generate(PROMPT, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    assert len(r.logprobs) == len(r.token_ids) == 6
    for tok, lp in zip(r.token_ids, r.logprobs):
        assert lp.token_id == tok and lp.logprob <= 0
        assert len(lp.top_logprobs) == 3
        values = [t.logprob for t in lp.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert lp.top_logprobs[0].token_id == tok  # greedy picks the most likely token
        assert lp.top_logprobs[0].logprob == pytest.approx(lp.logprob, abs=1e-4)


def test_logit_bias_forces_a_token(client):
    r = client.generate(PROMPT, max_tokens=5, temperature=0, logit_bias={42: 100.0})
    assert r.token_ids == [42] * 5


def test_n_branches(client):
    r = client.generate(PROMPT, max_tokens=5, temperature=1.0, seed=7, n=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert all(len(c.token_ids) == 5 and c.finish_reason == "length" for c in r.choices)
    assert r.usage.completion_tokens == 10


def test_add_request_and_follow_in_threaded_mode(client):
    reference = client.generate(PROMPT, max_tokens=30, temperature=0, ignore_eos=True)
    added = client.add_request(PROMPT, request_id="followed-1", max_tokens=30, temperature=0, ignore_eos=True)
    assert added.request_id == "followed-1"
    assert list(added.prompt_token_ids) == reference.prompt_token_ids
    s = client.follow("followed-1")
    tail = [t for d in s for t in d.token_ids]
    assert s.result.finish_reason == "length"
    # following starts from the moment of the call: what it saw is the end of the reference output
    assert tail == reference.token_ids[len(reference.token_ids) - len(tail):]


def test_model_info(client, tiny_model_dir):
    info = client.model_info()
    assert info.model_id == tiny_model_dir.name
    assert info.vocab_size == 384 and info.context_window_size == 512
    assert info.has_chat_template and info.mode == 1
    assert client.health() == "SERVING"
    assert client.health("spindle.v1.EngineService") == "SERVING"


def test_64_concurrent_streams_are_complete_and_unmixed(threaded_server):
    prompts = [f"{PROMPT} {i} {'fox ' * (i % 5)}" for i in range(8)]

    async def run():
        async with AsyncClient(threaded_server.target, timeout=120) as c:
            refs = [await c.generate(p, max_tokens=16, temperature=0, ignore_eos=True) for p in prompts]
            jobs = [c.generate(prompts[i % 8], max_tokens=16, temperature=0, ignore_eos=True,
                               request_id=f"many-{i}") for i in range(64)]
            return refs, await asyncio.gather(*jobs)

    refs, results = asyncio.run(run())
    for i, r in enumerate(results):
        ref = refs[i % 8]
        assert r.request_id == f"many-{i}"
        assert r.prompt_token_ids == ref.prompt_token_ids
        assert r.token_ids == ref.token_ids, f"stream {i} differs from its single-stream reference"
        assert r.text == ref.text and r.finish_reason == "length"
    with SyncClient(threaded_server.target) as c:
        m = c.metrics()
    assert m.running_requests == 0 and m.kv_pages_used == 0 and m.live_requests == 0


def test_stream_interval_sends_fewer_messages_with_the_same_tokens(client, server_thread, tiny_model_dir):
    expected = client.generate(PROMPT, max_tokens=13, temperature=0, ignore_eos=True)
    srv = server_thread(tiny_model_dir, mode="threaded", stream_interval=4)
    try:
        with SyncClient(srv.target, timeout=60) as c:
            s = c.stream(PROMPT, max_tokens=13, temperature=0, ignore_eos=True)
            deltas = list(s)
            assert c.metrics().live_requests == 0
    finally:
        srv.stop()
    assert s.result.token_ids == expected.token_ids and s.result.text == expected.text
    sizes = [len(d.token_ids) for d in deltas if d.token_ids]
    # the first message goes out as soon as there is a token (more only when the reader was late: the
    # queue unit tests check it is never held back), then at least 4 per message; the final one carries
    # the rest
    assert sum(sizes) == 13 and sizes[0] < 13
    assert all(n >= 4 for n in sizes[1:-1]) and len(sizes) <= 1 + 12 // 4 + 1


def test_stream_interval_ms_paces_messages_with_the_same_tokens(client, server_thread, tiny_model_dir):
    expected = client.generate(PROMPT, max_tokens=24, temperature=0, ignore_eos=True)
    per_step = server_thread(tiny_model_dir, mode="threaded", stream_interval_ms=0, max_messages_per_s=0)
    paced = server_thread(tiny_model_dir, mode="threaded", stream_interval_ms=300)
    sizes = {}
    try:
        for name, srv in (("per_step", per_step), ("paced", paced)):
            with SyncClient(srv.target, timeout=60) as c:
                t = time.monotonic()
                s = c.stream(PROMPT, max_tokens=24, temperature=0, ignore_eos=True)
                sizes[name] = [len(d.token_ids) for d in s if d.token_ids]
                elapsed = time.monotonic() - t
                assert s.result.token_ids == expected.token_ids and s.result.text == expected.text
                assert c.metrics().live_requests == 0
    finally:
        per_step.stop()
        paced.stop()
    assert sum(sizes["paced"]) == sum(sizes["per_step"]) == 24
    # paced: the first message at once, then at most one message per 300 ms, and the final one
    assert sizes["paced"][0] < 24 and len(sizes["paced"]) <= 2 + int(elapsed / 0.3)
    # per step: each step's token goes out on its own unless the reader fell behind
    assert len(sizes["per_step"]) > len(sizes["paced"])


def test_stream_interval_must_be_positive(tiny_model_dir):
    from spindle.server.app import ServerOptions, SpindleServer

    with pytest.raises(ValueError, match="stream_interval"):
        SpindleServer(tiny_model_dir, ServerOptions(stream_interval=0))
    with pytest.raises(ValueError, match="stream_interval_ms"):
        SpindleServer(tiny_model_dir, ServerOptions(stream_interval_ms=-1))
    for bad in (-1, 2.5, True, 1_000_001):
        with pytest.raises(ValueError, match="max_messages_per_s"):
            SpindleServer(tiny_model_dir, ServerOptions(max_messages_per_s=bad))


def test_message_budget_reaches_the_engine(threaded_server, server_thread, tiny_model_dir):
    from spindle.server.app import ServerOptions

    default = ServerOptions().max_messages_per_s
    assert default > 0 and threaded_server.server.servicer.host.output_budget_per_s == default
    srv = server_thread(tiny_model_dir, mode="threaded", max_messages_per_s=0)
    try:
        assert srv.server.servicer.host.output_budget_per_s == 0
    finally:
        srv.stop()


def test_admission_window_reaches_the_engine(threaded_server, server_thread, tiny_model_dir):
    assert threaded_server.server.servicer.host.admission_window_us == 8000  # the server preset's
    srv = server_thread(tiny_model_dir, mode="threaded", admission_window_us=0)
    try:
        assert srv.server.servicer.host.admission_window_us == 0
        with SyncClient(srv.target, timeout=60) as c:
            assert c.generate(PROMPT, max_tokens=3, temperature=0).finish_reason == "length"
    finally:
        srv.stop()
