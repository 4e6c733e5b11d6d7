"""The request table turns engine outputs into protobuf: finishes, stop handling, engine errors."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from spindle_client.v1 import engine_pb2 as pb

from spindle.engine import BranchDelta, FinishReason, RequestOutput, TokenLogprob, Usage
from spindle.server import convert
from spindle.server.errors import ServiceError
from spindle.server.model import ServedModel
from spindle.server.requests import LiveRequest, RequestTable
from spindle.server.servicer import EngineServicer


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return ServedModel.load(tiny_model_dir)


def _table_with(model, request_id="r1", **config):
    aborted = []
    table = RequestTable(8, 16, aborted.append)
    resolved = convert.resolve_config(pb.GenerationConfig(**config), model, 4)
    ids = model.tokenizer.encode("Once upon a time")
    req = LiveRequest(request_id, ids, resolved, model, 16)
    table.register(req)
    return table, req, aborted


def test_engine_error_finishes_with_error_and_the_stream_ends_internal(model):
    async def run():
        table, req, _ = _table_with(model)
        tok = model.tokenizer.encode(" the")
        table.dispatch([RequestOutput("r1", [BranchDelta(0, tok, None, None)], False, None, None)])
        table.dispatch([RequestOutput("r1", [BranchDelta(0, [], None, FinishReason.ERROR)], True,
                                      Usage(5, 1, 0.001, 0.001, 0.0, 0.002), "kv cache allocation failed")])
        assert req.final.branches[0].finish_reason == pb.FINISH_REASON_ERROR
        assert req.final.error_message == "kv cache allocation failed"
        assert "r1" not in table.live
        servicer = EngineServicer(model, table, "threaded", 1 << 20)
        got = []
        with pytest.raises(ServiceError) as info:
            async for msg in servicer._stream(req, req.queues[0], pb.GenerateResponse):
                got.append(msg)
        return got, info.value

    got, err = asyncio.run(run())
    assert len(got) == 1 and got[0].deltas[0].text == " the"
    assert err.code == grpc.StatusCode.INTERNAL and err.reason == "ENGINE_ERROR"
    assert "kv cache allocation failed" in err.message


def test_stop_string_across_outputs_asks_the_engine_to_abort_once(model):
    async def run():
        table, req, aborted = _table_with(model, stop_strings=["upon"])
        for piece in (" once", " up", "on", " a"):
            table.dispatch([RequestOutput("r1", [BranchDelta(0, model.tokenizer.encode(piece), None, None)],
                                          False, None, None)])
        assert aborted == ["r1"]
        table.dispatch([RequestOutput("r1", [BranchDelta(0, [], None, FinishReason.ABORT)], True, None, None)])
        items = []
        while len(req.queues[0]):
            items.append(await req.queues[0].get())
        return items

    items = asyncio.run(run())
    text = "".join(d.text for deltas, _ in items for d in deltas)
    final = items[-1][1]
    assert text == " once "
    assert final.branches[0].finish_reason == pb.FINISH_REASON_STOP
    assert final.branches[0].stop_string == "upon"


def test_a_stop_string_inside_a_merged_output_cuts_its_tokens_there(model):
    """One output carrying several steps' tokens (a paced engine): the delta ends with the token that
    completed the stop string; the tokens after it are neither sent nor counted."""
    async def run():
        table, req, aborted = _table_with(model, stop_strings=["upon"], logprobs=True)
        pieces = [model.tokenizer.encode(p) for p in (" once", " up", "on", " a", " time")]
        toks = [t for p in pieces for t in p]
        upto = len(pieces[0]) + len(pieces[1]) + len(pieces[2])
        lps = [TokenLogprob(t, -0.5, []) for t in toks]
        table.dispatch([RequestOutput("r1", [BranchDelta(0, toks, lps, None)], False, None, None)])
        assert aborted == ["r1"]
        table.dispatch([RequestOutput("r1", [BranchDelta(0, [], None, FinishReason.ABORT)], True, None, None)])
        items = []
        while len(req.queues[0]):
            items.append(await req.queues[0].get())
        return items, toks[:upto]

    items, expected = asyncio.run(run())
    deltas = [d for ds, _ in items for d in ds]
    assert "".join(d.text for d in deltas) == " once "
    assert [t for d in deltas for t in d.token_ids] == expected
    assert [lp.token_id for d in deltas for lp in d.logprobs or ()] == expected
    final = items[-1][1]
    assert final.branches[0].finish_reason == pb.FINISH_REASON_STOP
    assert final.branches[0].completion_tokens == len(expected)


def test_batched_outputs_for_many_requests_reach_each_queue_in_order(model):
    """Interleaved engine batches (as the stream-back loop hands them over, several before a reader runs)
    arrive per request in order, as the full decode, with exactly one final each."""
    texts = [" the cat sat", " on a mat", " once upon", " a time"]
    ids = [model.tokenizer.encode(t) for t in texts]

    async def run():
        table = RequestTable(8, 4, [].append)
        resolved = convert.resolve_config(pb.GenerationConfig(), model, 4)
        prompt = model.tokenizer.encode("Hello")
        reqs = [LiveRequest(f"r{i}", prompt, resolved, model, 4) for i in range(len(texts))]
        for r in reqs:
            table.register(r)
        steps = max(len(x) for x in ids)
        for k in range(steps):  # one batch per step, every live request in it
            batch = []
            for i, toks in enumerate(ids):
                if k < len(toks):
                    last = k == len(toks) - 1
                    batch.append(RequestOutput(f"r{i}", [BranchDelta(0, [toks[k]], None,
                                                                     FinishReason.LENGTH if last else None)],
                                               last, Usage(2, len(toks), 0.0, 0.0, 0.0, 0.0) if last else None,
                                               None))
            table.dispatch(batch)
        got = []
        for r in reqs:
            items = []
            while len(r.queues[0]):
                items.append(await r.queues[0].get())
            got.append(items)
        return got, table

    got, table = asyncio.run(run())
    assert not table.live
    for i, items in enumerate(got):
        assert "".join(d.text for deltas, _ in items for d in deltas) == model.decode(ids[i])
        assert [t for deltas, _ in items for d in deltas for t in d.token_ids] == ids[i]
        finals = [f for _, f in items if f is not None]
        assert len(finals) == 1 and items[-1][1] is finals[0]
        assert finals[0].branches[0].finish_reason == pb.FINISH_REASON_LENGTH
        assert finals[0].usage.completion_tokens == len(ids[i])


def test_stop_string_finishes_at_once_when_the_table_finishes_on_stop(model):
    async def run():
        aborted = []
        table = RequestTable(8, 16, aborted.append, finish_on_stop=True)
        resolved = convert.resolve_config(pb.GenerationConfig(stop_strings=["upon"]), model, 4)
        req = LiveRequest("r1", model.tokenizer.encode("Hi"), resolved, model, None)
        table.register(req)
        outs = []
        for piece in (" once", " up", "on", " a"):
            outs += table.dispatch([RequestOutput("r1", [BranchDelta(0, model.tokenizer.encode(piece), None, None)],
                                                  False, None, None)], collect=True)
        # the engine's own abort report comes later and is ignored: the request is no longer live
        outs += table.dispatch([RequestOutput("r1", [BranchDelta(0, [], None, FinishReason.ABORT)], True, None,
                                              None)], collect=True)
        return outs, aborted, table

    outs, aborted, table = asyncio.run(run())
    assert aborted == ["r1"] and not table.live
    finals = [o.final for o in outs if o.HasField("final")]
    assert len(finals) == 1 and outs[-1].HasField("final")
    assert finals[0].branches[0].finish_reason == pb.FINISH_REASON_STOP
    assert finals[0].branches[0].stop_string == "upon"
    assert "".join(d.text for o in outs for d in o.deltas) == " once "


def test_effective_config_reports_every_field_the_request_runs_with(model):
    cfg = pb.GenerationConfig(temperature=0.7, top_k=5, min_p=0.05, repetition_penalty=1.1, presence_penalty=0.5,
                              logit_bias={7: -2.5, 9: 1.0}, seed=1234, stop_token_ids=[3, 4],
                              stop_strings=["\n\n", "END"], ignore_eos=True, logprobs=True, top_logprobs=2)
    resolved = convert.resolve_config(cfg, model, 4)
    eff = resolved.effective
    assert eff is resolved.effective  # built once, when first asked for
    assert (eff.n, eff.temperature, eff.top_p, eff.top_k) == (1, pytest.approx(0.7), 1.0, 5)
    assert (eff.min_p, eff.repetition_penalty) == (pytest.approx(0.05), pytest.approx(1.1))
    assert (eff.frequency_penalty, eff.presence_penalty) == (0.0, 0.5)
    assert dict(eff.logit_bias) == {7: -2.5, 9: 1.0} and eff.seed == 1234
    assert list(eff.stop_token_ids) == [3, 4] and list(eff.stop_strings) == ["\n\n", "END"]
    assert (eff.ignore_eos, eff.logprobs, eff.top_logprobs) == (True, True, 2)
    assert not eff.HasField("max_tokens")
    unset = convert.resolve_config(pb.GenerationConfig(max_tokens=12), model, 4).effective
    assert unset.max_tokens == 12 and unset.temperature == 1.0 and unset.HasField("seed")


def test_a_config_message_seen_before_is_not_validated_again(model, monkeypatch):
    fresh = ServedModel(model.path, model.config, model.tokenizer)  # an empty cache
    calls = []
    validate = convert._resolve_config  # pylint: disable=protected-access
    monkeypatch.setattr(convert, "_resolve_config", lambda *a: calls.append(a) or validate(*a))
    seeded = pb.GenerationConfig(temperature=0.5, seed=9, stop_strings=["END"])
    first = convert.resolve_config(seeded, fresh, 4)
    again = convert.resolve_config(pb.GenerationConfig.FromString(seeded.SerializeToString()), fresh, 4)
    assert len(calls) == 1 and again is first  # the same bytes: one validation, one shared config
    assert first.engine_kwargs["seed"] == 9 and first.effective.seed == 9
    # a message without a seed: validated once, each request with a seed of its own
    a, b = (convert.resolve_config(pb.GenerationConfig(max_tokens=5), fresh, 4) for _ in range(2))
    assert len(calls) == 2
    assert a.engine_kwargs["seed"] != b.engine_kwargs["seed"]
    assert a.effective.seed == a.engine_kwargs["seed"] and b.effective.seed == b.engine_kwargs["seed"]
    # ... and one engine form, converted once, without a seed (each add passes its own)
    assert a.prepared is b.prepared and a.prepared.config.seed is None
    assert a.prepared.config.max_tokens == 5
    # another max batch size is another validation (n is checked against it)
    convert.resolve_config(pb.GenerationConfig(max_tokens=5), fresh, 2)
    assert len(calls) == 3


def test_bad_configs_are_refused_every_time_and_the_cache_is_bounded(model):
    fresh = ServedModel(model.path, model.config, model.tokenizer)
    for _ in range(2):
        with pytest.raises(ServiceError) as info:
            convert.resolve_config(pb.GenerationConfig(top_p=0.0), fresh, 4)
        assert info.value.violations == [("config.top_p", "must be in (0, 1], got 0.0")]
    assert not fresh.resolved_configs
    for i in range(convert.CONFIG_CACHE_SIZE + 10):
        convert.resolve_config(pb.GenerationConfig(max_tokens=i + 1), fresh, 4)
    assert len(fresh.resolved_configs) == convert.CONFIG_CACHE_SIZE
    assert convert.resolve_config(pb.GenerationConfig(max_tokens=1), fresh, 4).engine_kwargs["max_tokens"] == 1
