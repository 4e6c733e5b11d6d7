"""Every error path answers its status code, with BadRequest field violations and an ErrorInfo reason."""

from __future__ import annotations

import grpc
import pytest

from spindle_client import (AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError,
                            ResourceExhaustedError, SyncClient)
from spindle_client.v1 import engine_pb2 as pb
from spindle_client.v1 import engine_pb2_grpc as pb_grpc

PROMPT = "Once upon a time"
LONG = dict(max_tokens=400, temperature=0, ignore_eos=True)


@pytest.mark.parametrize("option, value, field", [
    ("temperature", -0.5, "config.temperature"),
    ("top_p", 0.0, "config.top_p"),
    ("top_p", 1.5, "config.top_p"),
    ("top_k", -1, "config.top_k"),
    ("min_p", 2.0, "config.min_p"),
    ("repetition_penalty", 0.0, "config.repetition_penalty"),
    ("frequency_penalty", 3.0, "config.frequency_penalty"),
    ("presence_penalty", -3.0, "config.presence_penalty"),
    ("max_tokens", 0, "config.max_tokens"),
    ("n", 0, "config.n"),
    ("n", 1000, "config.n"),
    ("top_logprobs", 21, "config.top_logprobs"),
    ("stop_token_ids", [5, 99999], "config.stop_token_ids[1]"),
    ("stop_strings", ["ok", ""], "config.stop_strings[1]"),
    ("logit_bias", {99999: 1.0}, "config.logit_bias[99999]"),
    ("logit_bias", {3: 500.0}, "config.logit_bias[3]"),
    ("temperature", float("nan"), "config.temperature"),
])
def test_bad_config_field_is_invalid_argument_naming_the_field(client, option, value, field):
    with pytest.raises(InvalidArgumentError) as info:
        client.generate(PROMPT, **{option: value})
    err = info.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.fields
    assert err.reason == "INVALID_FIELD"


def test_all_bad_fields_are_reported_together(client):
    with pytest.raises(InvalidArgumentError) as info:
        client.generate(token_ids=[1, 5000], temperature=-1, top_k=-2)
    assert set(info.value.fields) == {"prompt.token_ids.token_ids[1]", "config.temperature", "config.top_k"}


def test_top_logprobs_needs_logprobs(client):
    with pytest.raises(InvalidArgumentError) as info:
        client.generate(PROMPT, top_logprobs=2)
    assert info.value.fields == ["config.top_logprobs"]


def test_missing_or_empty_prompt(threaded_server, client):
    with grpc.insecure_channel(threaded_server.target) as ch:
        stub = pb_grpc.EngineServiceStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Generate(pb.GenerateRequest()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidArgumentError) as info:
        client.generate("")
    assert info.value.fields == ["prompt.text"]
    with pytest.raises(InvalidArgumentError) as info:
        client.generate(token_ids=[])
    assert info.value.fields == ["prompt.token_ids.token_ids"]
    with pytest.raises(InvalidArgumentError) as info:
        client.generate(messages=[{"role": "", "content": "x"}])
    assert info.value.fields == ["prompt.chat.messages[0].role"]


def test_prompt_longer_than_the_context_window(client):
    with pytest.raises(InvalidArgumentError) as info:
        client.generate(token_ids=[7] * 600)
    err = info.value
    assert err.reason == "PROMPT_TOO_LONG"
    assert err.fields == ["prompt"]
    assert "600" in err.message and "512" in err.message
    assert err.metadata == {"prompt_tokens": "600", "context_window_size": "512"}


def test_duplicate_request_id_is_already_exists(client):
    client.add_request(PROMPT, request_id="dup-1", **LONG)
    try:
        with pytest.raises(AlreadyExistsError) as info:
            client.generate(PROMPT, request_id="dup-1", max_tokens=2)
        assert info.value.reason == "DUPLICATE_REQUEST_ID"
        with pytest.raises(AlreadyExistsError):
            client.add_request(PROMPT, request_id="dup-1")
    finally:
        assert client.abort_request("dup-1") in (True, False)
    _wait_idle(client)


def test_too_many_queued_requests_is_resource_exhausted(threaded_server, client):
    old = threaded_server.run(lambda: threaded_server.table.max_live)
    threaded_server.run(setattr, threaded_server.table, "max_live", 2)
    try:
        client.add_request(PROMPT, request_id="full-1", **LONG)
        client.add_request(PROMPT, request_id="full-2", **LONG)
        with pytest.raises(ResourceExhaustedError) as info:
            client.generate(PROMPT, max_tokens=2)
        assert info.value.reason == "QUEUE_FULL"
        assert info.value.retry_delay_s == pytest.approx(1.0)
    finally:
        threaded_server.run(setattr, threaded_server.table, "max_live", old)
        client.abort_request("full-1")
        client.abort_request("full-2")
    _wait_idle(client)


def test_step_in_threaded_mode_is_failed_precondition(client):
    with pytest.raises(FailedPreconditionError) as info:
        client.step()
    assert info.value.reason == "WRONG_MODE"


def test_generate_and_follow_in_stepped_mode_are_failed_precondition(stepped_client):
    with pytest.raises(FailedPreconditionError):
        stepped_client.generate(PROMPT, max_tokens=2)
    with pytest.raises(FailedPreconditionError):
        list(stepped_client.follow("anything"))


def test_follow_unknown_request_is_not_found(client):
    with pytest.raises(NotFoundError) as info:
        list(client.follow("no-such-request"))
    assert info.value.fields == ["request_id"]


def test_abort_is_idempotent(client):
    assert client.abort_request("never-existed") is False
    assert client.abort_request("never-existed") is False
    with pytest.raises(InvalidArgumentError):
        client.abort_request("")


def test_detokenize_out_of_range(client):
    with pytest.raises(InvalidArgumentError) as info:
        client.detokenize([1, 2, -3])
    assert info.value.fields == ["token_ids[2]"]


def test_message_over_the_size_limit_is_resource_exhausted(threaded_server):
    with SyncClient(threaded_server.target, max_message_bytes=64 * 1024 * 1024) as c:
        with pytest.raises(ResourceExhaustedError):
            c.tokenize("a" * (5 * 1024 * 1024))


def _wait_idle(client, timeout_s: float = 10.0):
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = client.metrics()
        if m.live_requests == 0 and m.running_requests == 0 and m.waiting_requests == 0:
            return m
        time.sleep(0.01)
    raise AssertionError(f"engine not idle: {client.metrics()}")
