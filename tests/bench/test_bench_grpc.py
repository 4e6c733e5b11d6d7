"""bench/bench_grpc.py's summary of a round's token arrival times."""

from __future__ import annotations

import argparse
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

import bench_grpc  # noqa: E402


def _trace(start, messages):
    """A stream that started at `start` and got messages of (token count, arrival time)."""
    tr = bench_grpc.Trace(start)
    for n, t in messages:
        tr.add(n, t)
    return tr


def test_message_gaps_are_the_times_between_deliveries():
    # first token alone at 0.010 s, then 3 tokens at 0.040 and 2 at 0.070
    tr = _trace(0.0, [(1, 0.010), (3, 0.040), (2, 0.070)])
    assert bench_grpc.message_gaps(tr) == pytest.approx([30.0, 30.0])
    assert bench_grpc.message_gaps(_trace(0.0, [(4, 0.010)])) == []


def test_summary_shares_a_gap_among_its_tokens_but_reports_the_gap_a_reader_sees():
    traces = [_trace(0.0, [(1, 0.010), (3, 0.040), (2, 0.070)]),
              _trace(0.0, [(1, 0.020), (1, 0.030), (1, 0.040)])]
    s = bench_grpc.summarize(traces, wall_s=0.1)
    assert s["ttft_p50"] == pytest.approx(10.0)  # the rounded-index median of [10, 20] ms
    # per-token gaps: 10, 10, 10 (30 ms over 3 tokens), 15, 15 (30 ms over 2) and 10, 10 -> median 10
    assert s["itl_p50"] == pytest.approx(10.0)
    # message gaps: 30, 30, 10, 10 -> the rounded-index median of the sorted list [10, 10, 30, 30] is 30
    assert s["gap_p50"] == pytest.approx(30.0)
    assert s["msgs"] == pytest.approx(3.0)
    assert s["tok_s"] == pytest.approx(9 / 0.1)


def test_client_cpu_is_a_share_of_every_core_over_the_round(monkeypatch):
    traces = [_trace(0.0, [(1, 0.010), (3, 0.040)])]
    monkeypatch.setattr(bench_grpc.os, "cpu_count", lambda: 2)
    # 10 ms of client CPU in a 200 ms round on 2 cores: 10 / 400 of the machine
    assert bench_grpc.summarize(traces, wall_s=0.2, client_cpu_s=0.010)["client_cpu"] == pytest.approx(2.5)
    # no client measured (the in-process path): NaN, left blank in the table
    s = bench_grpc.summarize(traces, wall_s=0.2)
    assert s["client_cpu"] != s["client_cpu"]


def test_cpu_lists_read_as_taskset_writes_them():
    assert bench_grpc.parse_cpus("1") == {1}
    assert bench_grpc.parse_cpus("0-3,6") == {0, 1, 2, 3, 6}
    assert bench_grpc.cpu_list({6, 0, 2}) == "0,2,6"
    for bad in ("", "a", "1-", "0,,1", "3-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="CPU list"):
            bench_grpc.parse_cpus(bad)
