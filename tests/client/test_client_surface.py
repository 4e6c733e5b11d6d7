"""Client-side behaviour that needs no server: request building and the typed error conversion."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from spindle_client import InvalidArgumentError, ResourceExhaustedError, SpindleError, from_rpc_error
from spindle_client.types import make_config, make_prompt


def test_make_prompt_kinds():
    assert make_prompt("hi").text == "hi"
    assert list(make_prompt([1, 2, 3]).token_ids.token_ids) == [1, 2, 3]
    chat = make_prompt([{"role": "user", "content": "hi"}]).chat
    assert chat.messages[0].role == "user"
    with pytest.raises(TypeError):
        make_prompt()
    with pytest.raises(TypeError):
        make_prompt("a", token_ids=[1])
    with pytest.raises(TypeError):
        make_prompt([1.5])


def test_make_config_rejects_unknown_options_and_keeps_presence():
    cfg = make_config(temperature=0.0, max_tokens=5, stop_strings="END", seed=None)
    assert cfg.HasField("temperature") and cfg.temperature == 0.0
    assert not cfg.HasField("seed")
    assert list(cfg.stop_strings) == ["END"]
    with pytest.raises(TypeError, match="temprature"):
        make_config(temprature=1.0)


class _FakeCall(grpc.RpcError):
    def __init__(self, status: status_pb2.Status):
        self._status = rpc_status.to_status(status)

    def code(self):
        return self._status.code

    def details(self):
        return self._status.details

    def trailing_metadata(self):
        return self._status.trailing_metadata


def _any(msg):
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def test_from_rpc_error_reads_field_violations_and_error_info():
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="config.top_p", description="must be in (0, 1]")])
    info = error_details_pb2.ErrorInfo(reason="INVALID_FIELD", domain="spindle.dev")
    err = from_rpc_error(_FakeCall(status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="bad",
                                                     details=[_any(bad), _any(info)])))
    assert isinstance(err, InvalidArgumentError) and isinstance(err, SpindleError)
    assert err.fields == ["config.top_p"] and err.reason == "INVALID_FIELD"
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT


def test_from_rpc_error_reads_retry_info():
    from google.protobuf import duration_pb2

    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000))
    err = from_rpc_error(_FakeCall(status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="full",
                                                     details=[_any(retry)])))
    assert isinstance(err, ResourceExhaustedError) and err.retry_delay_s == pytest.approx(2.5)
