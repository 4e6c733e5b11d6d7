"""Step-level tests of the stepped Engine on the tiny compiled model: queues, pages and finishes
after each step, continuous batching, preemption, aborts, reset and stop conditions."""

from __future__ import annotations

import math

import pytest

from spindle.engine import FinishReason, GenerationConfig

from engine_helpers import Collector, greedy, run_alone

PAGE = 16


def pages(n_tokens: int) -> int:
    return math.ceil(n_tokens / PAGE)


def prompt(seed: int, length: int) -> list[int]:
    return [(seed * 31 + i * 7) % 380 + 3 for i in range(length)]


def test_state_and_pages_after_each_step(make_engine):
    engine = make_engine(max_num_sequence=2)
    engine.add_request("a", prompt(1, 20), greedy(max_tokens=3))
    engine.add_request("b", prompt(2, 5), greedy(max_tokens=2))
    engine.add_request("c", prompt(3, 7), greedy(max_tokens=1))
    m = engine.metrics()
    assert (m.running, m.waiting, m.kv_pages_used) == (0, 3, 0)

    out = {o.request_id: o for o in engine.step()}  # one packed prefill of a and b; c waits for a slot
    m = engine.metrics()
    assert (m.running, m.waiting, m.prefill_steps, m.decode_steps) == (2, 1, 1, 0)
    assert m.prefill_tokens == 25
    assert m.kv_pages_used == pages(20) + pages(5)
    assert sorted(out) == ["a", "b"]
    assert all(len(o.branches[0].token_ids) == 1 and not o.finished for o in out.values())

    out = {o.request_id: o for o in engine.step()}  # decode a and b: b reaches max_tokens
    m = engine.metrics()
    assert m.decode_steps == 1 and m.decode_tokens == 2
    assert out["b"].finished and out["b"].branches[0].finish_reason is FinishReason.LENGTH
    assert out["b"].usage.prompt_tokens == 5 and out["b"].usage.completion_tokens == 2
    assert not out["a"].finished
    assert (m.running, m.waiting, m.finished) == (1, 1, 1)
    assert m.kv_pages_used == pages(21)  # b's pages were freed at its finish

    out = {o.request_id: o for o in engine.step()}  # c is admitted: prefill wins this step
    assert list(out) == ["c"] and out["c"].finished  # max_tokens=1 finishes at the prefill
    assert engine.metrics().running == 1

    out = {o.request_id: o for o in engine.step()}
    assert out["a"].finished and len(out["a"].branches[0].token_ids) == 1
    m = engine.metrics()
    assert engine.empty() and (m.running, m.waiting, m.finished, m.kv_pages_used) == (0, 0, 3, 0)
    assert m.completion_tokens == 6


def test_chunked_prefill_bounded_by_chunk_size(make_engine):
    engine = make_engine(prefill_chunk_size=16)
    engine.add_request("long", prompt(4, 40), greedy(max_tokens=2))
    assert engine.step() == []
    assert engine.metrics().prefill_tokens == 16
    assert engine.step() == []
    out = engine.step()
    assert len(out) == 1 and len(out[0].branches[0].token_ids) == 1
    m = engine.metrics()
    assert (m.prefill_steps, m.prefill_tokens) == (3, 40)
    Collector().run(engine)
    reference = run_alone(make_engine(), "ref", prompt(4, 40), greedy(max_tokens=2))
    engine.add_request("again", prompt(4, 40), greedy(max_tokens=2))
    c = Collector()
    c.run(engine)
    assert c.tokens["again"][0] == reference


def test_continuous_batching_matches_each_request_alone(make_engine):
    engine = make_engine(max_num_sequence=4)
    specs = {f"r{i}": (prompt(10 + i, 3 + 5 * i), greedy(max_tokens=6 + 2 * i)) for i in range(6)}
    solo = {rid: run_alone(engine, rid, p, g) for rid, (p, g) in specs.items()}
    assert len({tuple(t) for t in solo.values()}) > 1, "the references should differ"

    c = Collector()
    ids = list(specs)
    for rid in ids[:2]:
        engine.add_request(rid, *specs[rid])
    c.add(engine.step())
    c.add(engine.step())
    for rid in ids[2:]:  # join while the first two are decoding
        engine.add_request(rid, *specs[rid])
        c.add(engine.step())
    c.run(engine)
    assert {rid: c.tokens[rid][0] for rid in ids} == solo
    assert all(len(c.finishes[rid]) == 1 for rid in ids) and not c.after_finish


def test_preemption_under_a_small_kv_budget_loses_nothing(make_engine):
    small = make_engine(max_num_sequence=4, max_total_sequence_length=64, max_single_sequence_length=64)
    total_pages = small.metrics().kv_pages_total
    specs = {f"p{i}": (prompt(20 + i, 12), greedy(max_tokens=30)) for i in range(4)}
    solo = {rid: run_alone(small, rid, p, g) for rid, (p, g) in specs.items()}
    before = small.metrics().preempted

    c = Collector()
    for rid, (p, g) in specs.items():
        small.add_request(rid, p, g)
    peak = 0
    while not small.empty():
        c.add(small.step())
        m = small.metrics()
        peak = max(peak, m.kv_pages_used)
        assert m.kv_pages_used <= total_pages
    m = small.metrics()
    assert m.preempted > before, "four 42-token sequences cannot fit in a 64-token cache without preemption"
    assert {rid: c.tokens[rid][0] for rid in specs} == solo
    assert all(len(c.finishes[rid]) == 1 for rid in specs) and not c.after_finish
    assert all(c.finishes[rid][0].usage.completion_tokens == 30 for rid in specs)
    assert m.kv_pages_used == 0


@pytest.mark.parametrize("abort_step", [0, 1, 2, 3, 5, 8])
def test_abort_at_any_point_frees_all_pages(make_engine, abort_step):
    engine = make_engine(max_num_sequence=3, prefill_chunk_size=16)
    specs = {"keep": (prompt(30, 20), greedy(max_tokens=8)), "gone": (prompt(31, 36), greedy(max_tokens=8, n=1)),
             "fork": (prompt(32, 9), GenerationConfig(n=2, temperature=5.0, seed=3, max_tokens=8, ignore_eos=True))}
    reference = run_alone(engine, "keep-ref", *specs["keep"])
    c = Collector()
    for rid, (p, g) in specs.items():
        engine.add_request(rid, p, g)
    for step in range(abort_step):
        c.add(engine.step())
    engine.abort_request("gone")
    engine.abort_request("fork")
    engine.abort_request("gone")  # idempotent
    engine.abort_request("never-added")
    c.run(engine)
    assert len(c.finishes["gone"]) == 1 and len(c.finishes["fork"]) == 1 and not c.after_finish
    if "gone" not in c.branch_finish or c.branch_finish["gone"][0] is not FinishReason.LENGTH:
        assert c.branch_finish["gone"][0] is FinishReason.ABORT
    assert c.tokens["keep"][0] == reference
    m = engine.metrics()
    assert m.kv_pages_used == 0 and m.running == 0 and m.waiting == 0


def test_reset_aborts_everything(make_engine):
    engine = make_engine()
    c = Collector()
    for i in range(3):
        engine.add_request(f"x{i}", prompt(40 + i, 10), greedy(max_tokens=50))
    c.add(engine.step())
    c.add(engine.step())
    assert engine.metrics().kv_pages_used > 0
    engine.reset()
    m = engine.metrics()
    assert (m.running, m.waiting, m.kv_pages_used) == (0, 0, 0)
    c.run(engine)
    assert engine.empty()
    assert all(c.finishes[f"x{i}"][0].branches[0].finish_reason is FinishReason.ABORT for i in range(3))
    engine.add_request("x0", prompt(40, 10), greedy(max_tokens=2))  # ids are free again
    c2 = Collector()
    c2.run(engine)
    assert len(c2.tokens["x0"][0]) == 2


def test_seed_reproduces_whatever_the_batch(make_engine):
    engine = make_engine(max_num_sequence=4)
    sampled = GenerationConfig(temperature=30.0, top_p=0.95, seed=1234, max_tokens=16, ignore_eos=True)
    alone = run_alone(engine, "s", prompt(50, 6), sampled)
    assert alone == run_alone(engine, "s", prompt(50, 6), sampled)
    other_seed = run_alone(engine, "s", prompt(50, 6), GenerationConfig(
        temperature=30.0, top_p=0.95, seed=99, max_tokens=16, ignore_eos=True))
    assert other_seed != alone
    c = Collector()
    engine.add_request("noise1", prompt(51, 13), GenerationConfig(temperature=30.0, max_tokens=20, ignore_eos=True))
    c.add(engine.step())
    engine.add_request("s", prompt(50, 6), sampled)
    engine.add_request("noise2", prompt(52, 3), GenerationConfig(temperature=2.0, seed=5, max_tokens=9))
    c.run(engine)
    assert c.tokens["s"][0] == alone


def test_n_branches_fork_the_prompt(make_engine):
    engine = make_engine(max_num_sequence=8)
    p = prompt(60, 18)
    single = run_alone(engine, "one", p, greedy(max_tokens=7))
    c = Collector()
    engine.add_request("three", p, greedy(max_tokens=7, n=3))
    c.add(engine.step())
    m = engine.metrics()
    # The prompt's pages are shared: the prompt sequence plus one copied partial page per branch.
    assert m.kv_pages_used <= pages(18) + 3
    c.run(engine)
    assert [c.tokens["three"][i] for i in range(3)] == [single] * 3
    assert c.finishes["three"][0].usage.completion_tokens == 21

    sampled = GenerationConfig(n=3, temperature=30.0, seed=7, max_tokens=10, ignore_eos=True)
    c = Collector()
    engine.add_request("sampled", p, sampled)
    c.run(engine)
    branches = [tuple(c.tokens["sampled"][i]) for i in range(3)]
    assert len(set(branches)) == 3, "branches draw from independent streams"
    assert engine.metrics().kv_pages_used == 0


def test_stop_token_and_eos(make_engine):
    engine = make_engine()
    p = prompt(70, 8)
    ref = run_alone(engine, "ref", p, greedy(max_tokens=6))
    stop_tok = ref[-1]
    idx = ref.index(stop_tok)  # generation stops at its first occurrence
    c = Collector()
    engine.add_request("stop", p, greedy(max_tokens=6, stop_token_ids=[stop_tok]))
    c.run(engine)
    assert c.tokens["stop"][0] == ref[:idx]  # the stop token itself is not returned
    assert c.branch_finish["stop"][0] is FinishReason.STOP
    assert c.stop_tokens["stop"][0] == stop_tok  # which stop token matched is reported
    assert c.finishes["stop"][0].usage.completion_tokens == idx + 1

    eos = 2  # the tiny artifact's eos_token_ids are [0, 2]
    c = Collector()
    engine.add_request("eos", p, GenerationConfig(temperature=0.0, max_tokens=5, logit_bias={eos: 100.0}))
    engine.add_request("no-eos", p, GenerationConfig(temperature=0.0, max_tokens=5, logit_bias={eos: 100.0},
                                                     ignore_eos=True))
    c.run(engine)
    assert c.tokens["eos"][0] == [] and c.branch_finish["eos"][0] is FinishReason.STOP
    assert c.stop_tokens["eos"][0] == eos
    assert c.tokens["no-eos"][0] == [eos] * 5 and c.branch_finish["no-eos"][0] is FinishReason.LENGTH
    assert c.stop_tokens["no-eos"][0] is None  # finished by length: no stop token


def test_context_limit_gives_length(make_engine):
    engine = make_engine(max_single_sequence_length=32)
    c = Collector()
    engine.add_request("ctx", prompt(80, 20), GenerationConfig(temperature=0.0, ignore_eos=True))
    c.run(engine)
    assert len(c.tokens["ctx"][0]) == 12
    assert c.branch_finish["ctx"][0] is FinishReason.LENGTH


def test_logprobs_and_top_logprobs(make_engine):
    engine = make_engine()
    c = Collector()
    engine.add_request("lp", prompt(90, 9), greedy(max_tokens=4, logprobs=True, top_logprobs=5))
    engine.add_request("plain", prompt(90, 9), greedy(max_tokens=4))
    while not engine.empty():
        for o in engine.step():
            for b in o.branches:
                if o.request_id == "plain":
                    assert b.logprobs is None
                    continue
                assert len(b.logprobs) == len(b.token_ids)
                for tok, lp in zip(b.token_ids, b.logprobs):
                    assert lp.token_id == tok and lp.logprob <= 0
                    assert len(lp.top) == 5
                    values = [v for _, v in lp.top]
                    assert values == sorted(values, reverse=True)
                    assert lp.top[0][0] == tok and lp.top[0][1] == pytest.approx(lp.logprob)
                    assert sum(math.exp(v) for v in values) <= 1.0 + 1e-5
        c.add([])


def test_logit_bias_changes_the_greedy_choice(make_engine):
    engine = make_engine()
    p = prompt(95, 5)
    first = run_alone(engine, "a", p, greedy(max_tokens=1))[0]
    changed = run_alone(engine, "b", p, greedy(max_tokens=1, logit_bias={first: -100.0}))[0]
    assert changed != first


def test_preempted_forked_branches_are_recomputed(make_engine):
    small = make_engine(max_num_sequence=6, max_total_sequence_length=64, max_single_sequence_length=64)
    sampled = GenerationConfig(n=2, temperature=30.0, seed=11, max_tokens=24, ignore_eos=True)
    p = prompt(99, 10)
    c = Collector()
    small.add_request("forked", p, sampled)
    c.run(small)
    alone = [c.tokens["forked"][0], c.tokens["forked"][1]]
    before = small.metrics().preempted

    c = Collector()
    small.add_request("older", prompt(98, 12), greedy(max_tokens=40))
    c.add(small.step())
    small.add_request("forked", p, sampled)
    c.run(small)
    assert small.metrics().preempted > before
    assert [c.tokens["forked"][0], c.tokens["forked"][1]] == alone
    assert len(c.finishes["forked"]) == 1 and not c.after_finish
    assert small.metrics().kv_pages_used == 0


def test_a_request_that_cannot_fit_the_cache_is_rejected(make_engine):
    from spindle.engine import InvalidRequestError  # pylint: disable=import-outside-toplevel

    small = make_engine(max_num_sequence=8, max_total_sequence_length=32, max_single_sequence_length=32)
    assert small.metrics().kv_pages_total == 3
    # 20 prompt tokens (2 pages) and 6 branches that each need a page of their own: more than the cache.
    with pytest.raises(InvalidRequestError) as err:
        small.add_request("wide", prompt(7, 20), GenerationConfig(n=6, max_tokens=4, ignore_eos=True))
    assert err.value.field == "n" and "KV pages" in err.value.message
    c = Collector()
    small.add_request("narrow", prompt(7, 20), GenerationConfig(n=1, max_tokens=4, ignore_eos=True))
    small.add_request("fits", prompt(8, 5), greedy(max_tokens=3))
    c.run(small, max_steps=100)
    assert len(c.tokens["narrow"][0]) == 4 and len(c.tokens["fits"][0]) == 3
    assert small.metrics().kv_pages_used == 0


@pytest.mark.parametrize("dtype", ["float16", "q4_1"])
def test_other_weight_formats_run_on_the_engine(tiny_model_factory, dtype):
    from spindle.engine import Engine, EngineConfig  # pylint: disable=import-outside-toplevel

    engine = Engine(EngineConfig(model=str(tiny_model_factory(dtype)), mode="server", max_num_sequence=4))
    c = Collector()
    for i in range(3):
        engine.add_request(f"{dtype}-{i}", prompt(100 + i, 9 + i), greedy(max_tokens=5, logprobs=True))
    c.run(engine)
    for i in range(3):
        rid = f"{dtype}-{i}"
        assert len(c.tokens[rid][0]) == 5 and c.branch_finish[rid][0] is FinishReason.LENGTH
    assert engine.metrics().kv_pages_used == 0
