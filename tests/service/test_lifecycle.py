"""Health (NOT_SERVING until loaded and while draining), reflection, drain with a grace period."""

from __future__ import annotations

import gc
import logging
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from google.protobuf.descriptor_pool import DescriptorPool

from spindle_client import SyncClient, UnavailableError


PROMPT = "Once upon a time"


def test_reflection_lists_and_describes_the_service(threaded_server):
    with grpc.insecure_channel(threaded_server.target) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {"spindle.v1.EngineService", "grpc.health.v1.Health"} <= services
        pool = DescriptorPool(db)
        svc = pool.FindServiceByName("spindle.v1.EngineService")
        assert {m.name for m in svc.methods} >= {"Generate", "AddRequest", "AbortRequest", "Step", "Reset",
                                                 "Metrics", "FollowRequest", "GetModelInfo", "Tokenize"}
        cfg = pool.FindMessageTypeByName("spindle.v1.GenerationConfig")
        assert "stop_strings" in cfg.fields_by_name


def test_health_not_serving_until_loaded_then_drain(tiny_model_dir, server_thread):
    srv = server_thread(tiny_model_dir, load=False, grace_period_s=0.0)
    target = srv.target
    try:
        with SyncClient(target, timeout=30) as c:
            assert c.health() == "NOT_SERVING"
            with pytest.raises(UnavailableError) as info:
                c.generate(PROMPT, max_tokens=2)
            assert info.value.reason == "MODEL_LOADING"
            srv.call(srv.server.load())
            assert c.health() == "SERVING"
            assert c.generate(PROMPT, max_tokens=2, temperature=0).finish_reason == "length"

            # with no grace period, a long request in flight when the drain starts is aborted at once and
            # its stream ends with UNAVAILABLE
            s = c.stream(PROMPT, max_tokens=480, temperature=0, ignore_eos=True)
            it = iter(s)
            next(it)
            srv.loop.call_soon_threadsafe(srv.server.request_drain)
            with pytest.raises(UnavailableError) as info:
                for _ in it:
                    pass
            assert info.value.reason == "SHUTTING_DOWN"
            assert len(s._builder.choices[0].token_ids) < 480
        srv.call(srv.server.wait_stopped(), timeout=30)
    finally:
        srv.stop()


def test_health_watch_of_threaded_server(threaded_server):
    with grpc.insecure_channel(threaded_server.target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        resp = stub.Check(health_pb2.HealthCheckRequest(service="spindle.v1.EngineService"), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_drain_refuses_new_requests_and_aborts_after_the_grace_period(tiny_model_dir, server_thread):
    # stepped mode: an added request makes no progress, so it is still live when the grace period ends
    srv = server_thread(tiny_model_dir, mode="stepped", grace_period_s=1.0)
    try:
        with SyncClient(srv.target, timeout=30) as c:
            rid = c.add_request(PROMPT, max_tokens=5).request_id
            srv.loop.call_soon_threadsafe(srv.server.request_drain)
            time.sleep(0.1)
            assert c.health() == "NOT_SERVING"
            m = c.metrics()
            assert m.draining and m.live_requests == 1
            with pytest.raises(UnavailableError) as info:
                c.add_request(PROMPT, max_tokens=5)
            assert info.value.reason == "SHUTTING_DOWN"
            assert rid in srv.run(lambda: list(srv.table.live))
        srv.call(srv.server.wait_stopped(), timeout=30)
        assert srv.run(lambda: len(srv.table.live)) == 0
    finally:
        srv.stop()


def test_healthcheck_module_exit_codes(threaded_server):
    from spindle_client import healthcheck

    assert healthcheck.main([threaded_server.target]) == 0
    assert healthcheck.main([threaded_server.target, "spindle.v1.EngineService"]) == 0
    assert healthcheck.main([threaded_server.target, "no.such.Service"]) == 1
    assert healthcheck.main(["127.0.0.1:1"]) == 1


def test_reflection_serves_the_proto_documentation(threaded_server):
    with grpc.insecure_channel(threaded_server.target) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        fd = db.FindFileContainingSymbol("spindle.v1.EngineService")
        comments = [loc.leading_comments for loc in fd.source_code_info.location if loc.leading_comments]
        assert any("Seed of the sampler" in c for c in comments)
        health = db.FindFileContainingSymbol("grpc.health.v1.Health")
        assert health.name.endswith("health.proto")


def test_the_start_log_reports_the_weights_and_their_huge_pages(tiny_model_dir, server_thread, caplog):
    caplog.set_level(logging.INFO, logger="spindle.server")
    srv = server_thread(tiny_model_dir, mode="threaded")
    try:
        host = srv.server.servicer.host
        assert host.weight_bytes > 0 and 0 <= host.weight_huge_page_bytes <= host.weight_bytes
        line = f"weights {host.weight_bytes / 1e6:.1f} MB, {host.weight_huge_page_bytes / 1e6:.1f} MB of them in 2 MB pages"
        assert line in caplog.text
    finally:
        srv.stop()


def test_a_loaded_server_keeps_what_it_loaded_out_of_the_collectors_sight(tiny_model_dir, server_thread):
    srv = server_thread(tiny_model_dir, load=False)
    try:
        host_objects = lambda: [o for o in gc.get_objects() if o is srv.server.servicer]  # noqa: E731
        assert host_objects()  # tracked by the collector until the model is loaded
        srv.call(srv.server.load())
        assert gc.get_freeze_count() > 0
        assert not host_objects()  # frozen: a full collection no longer scans it
        with SyncClient(srv.target, timeout=30) as c:
            assert c.generate(PROMPT, max_tokens=2, temperature=0).finish_reason == "length"
    finally:
        srv.stop()
    assert gc.get_freeze_count() == 0  # stop hands everything back to the collector
