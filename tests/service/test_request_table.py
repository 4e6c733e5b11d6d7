"""The request table turns engine outputs into protobuf: finishes, stop handling, engine errors."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from spindle_client.v1 import engine_pb2 as pb

from spindle.engine import BranchDelta, FinishReason, RequestOutput, Usage
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
