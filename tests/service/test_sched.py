"""Scheduling classes: serving threads SCHED_BATCH, the model's compute threads SCHED_OTHER."""

from __future__ import annotations

import os
import threading

import pytest

from spindle.server import sched
from spindle_client import SyncClient

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling classes")


def _in_thread(fn):
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("value", fn()))
    t.start()
    t.join()
    return box["value"]


def test_a_serving_thread_is_batch_and_threads_it_starts_inherit_it():
    def body():
        previous = sched.serving_thread()
        return previous, sched.policy(), _in_thread(sched.policy)

    previous, own, child = _in_thread(body)
    assert (previous, own, child) == (os.SCHED_OTHER, os.SCHED_BATCH, os.SCHED_BATCH)


def test_compute_threads_start_in_the_default_class_and_the_caller_keeps_its_own():
    def body():
        sched.serving_thread()
        with sched.compute_threads():
            inside, during = _in_thread(sched.policy), sched.policy()
        return inside, during, sched.policy()

    inside, during, after = _in_thread(body)
    assert inside == os.SCHED_OTHER and during == os.SCHED_OTHER and after == os.SCHED_BATCH


def _tasks() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def test_server_threads_take_their_classes_and_the_loop_gets_its_own_back(server_thread, tiny_model_dir):
    before = _tasks()
    srv = server_thread(tiny_model_dir, mode="threaded")
    try:
        loop_tid = srv.run(threading.get_native_id)
        assert os.sched_getscheduler(loop_tid) == os.SCHED_BATCH
        with SyncClient(srv.target, timeout=60) as c:
            assert len(c.generate(token_ids=[3, 4, 5], max_tokens=4, temperature=0).token_ids) == 4
        host = srv.server.servicer.host
        assert host.stream_back_tid is not None and host.stream_back_tid != loop_tid
        assert os.sched_getscheduler(host.stream_back_tid) == os.SCHED_BATCH
        # the engine's loop started inside compute_threads(): a new thread in the default class
        new = {}
        for tid in _tasks() - before:
            try:
                new[tid] = os.sched_getscheduler(tid)
            except OSError:  # ended meanwhile
                pass
        assert os.SCHED_OTHER in new.values(), new
        srv.call(srv.server.stop(grace=0.5))
        assert srv.run(sched.policy) == os.SCHED_OTHER
    finally:
        srv.stop()


def test_the_stepped_engine_thread_computes_in_the_default_class(server_thread, tiny_model_dir):
    srv = server_thread(tiny_model_dir, mode="stepped")
    try:
        assert srv.run(sched.policy) == os.SCHED_BATCH
        host = srv.server.servicer.host
        assert srv.call(host._run(sched.policy)) == os.SCHED_OTHER  # pylint: disable=protected-access
    finally:
        srv.stop()


def test_batch_scheduling_can_be_turned_off(server_thread, tiny_model_dir):
    srv = server_thread(tiny_model_dir, mode="threaded", batch_scheduling=False)
    try:
        assert srv.run(sched.policy) == os.SCHED_OTHER
        with SyncClient(srv.target, timeout=60) as c:
            c.generate(token_ids=[3, 4, 5], max_tokens=2, temperature=0)
        assert srv.server.servicer.host.stream_back_tid is None
    finally:
        srv.stop()
