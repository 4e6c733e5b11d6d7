"""The spindle command: generate against a live server, serve as a process that drains on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spindle.cli import build_parser, main
from spindle.server.app import ServerOptions
from spindle_client import SyncClient

ROOT = Path(__file__).resolve().parents[2]


def test_generate_command_prints_the_generation(threaded_server, capsys):
    with SyncClient(threaded_server.target) as c:
        expected = c.generate("Once upon a time", max_tokens=5, temperature=0)
    assert main(["generate", "Once upon a time", "--address", threaded_server.target, "--max-tokens", "5",
                 "--temperature", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] == expected.text and out["token_ids"] == expected.token_ids
    assert out["finish_reason"] == "length"


def test_generate_command_reports_field_errors(threaded_server, capsys):
    assert main(["generate", "hi", "--address", threaded_server.target, "--temperature", "-1"]) == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and "config.temperature" in err


def test_parser_has_the_three_subcommands():
    parser = build_parser()
    args = parser.parse_args(["serve", "--mode", "stepped", "--port", "0"])
    assert (args.mode, args.port, args.host, args.model) == ("stepped", 0, "127.0.0.1", None)
    assert parser.parse_args(["compile", "--dtype", "q8_0"]).dtype == "q8_0"
    assert parser.parse_args(["generate", "x"]).address


def test_serve_process_serves_then_drains_on_sigterm(tiny_model_dir):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "service"), str(ROOT / "clients" / "python"),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-m", "spindle.cli", "serve", str(tiny_model_dir), "--port", "0",
                             "--grace-period", "5"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        port = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"serving .* on 127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "".join(lines)
        assert "dtype float32" in lines[-1] and tiny_model_dir.name in lines[-1]
        with SyncClient(f"127.0.0.1:{port}", timeout=30) as c:
            assert c.health() == "SERVING"
            assert c.generate("Once upon a time", max_tokens=3, temperature=0).finish_reason == "length"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        rest = proc.stderr.read()
        assert "draining" in rest and "stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_on_a_busy_port_fails_cleanly(threaded_server, tiny_model_dir):
    port = threaded_server.port
    proc = subprocess.run([sys.executable, "-m", "spindle.cli", "serve", str(tiny_model_dir), "--port", str(port)],
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(ROOT / "service"), str(ROOT / "clients" / "python")])},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_rejects_a_stream_interval_below_one(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--stream-interval", "0"])
    assert "--stream-interval" in capsys.readouterr().err
    assert build_parser().parse_args(["serve", "--stream-interval", "4"]).stream_interval == 4


def test_serve_stream_interval_ms_flag(capsys):
    assert build_parser().parse_args(["serve"]).stream_interval_ms == 30.0
    assert build_parser().parse_args(["serve", "--stream-interval-ms", "0"]).stream_interval_ms == 0.0
    assert build_parser().parse_args(["serve", "--stream-interval-ms", "2.5"]).stream_interval_ms == 2.5
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--stream-interval-ms", "-1"])
    assert "--stream-interval-ms" in capsys.readouterr().err


def test_serve_max_messages_per_s_flag(capsys):
    assert build_parser().parse_args(["serve"]).max_messages_per_s == 300
    assert build_parser().parse_args(["serve", "--max-messages-per-s", "0"]).max_messages_per_s == 0
    for bad in ("-1", "2.5", "lots"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", "--max-messages-per-s", bad])
        assert "--max-messages-per-s" in capsys.readouterr().err


def test_serve_batch_scheduling_flag():
    assert build_parser().parse_args(["serve"]).batch_scheduling is True
    assert build_parser().parse_args(["serve", "--no-batch-scheduling"]).batch_scheduling is False


def test_serve_admission_window_flag():
    assert build_parser().parse_args(["serve", "--admission-window-ms", "2.5"]).admission_window_ms == 2.5
    assert build_parser().parse_args(["serve"]).admission_window_ms is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--admission-window-ms", "-1"])


def test_serve_accept_ahead_flag(capsys):
    assert build_parser().parse_args(["serve"]).accept_ahead == ServerOptions().accept_ahead == 15
    assert build_parser().parse_args(["serve", "--accept-ahead", "0"]).accept_ahead == 0
    for bad in ("-1", "1025", "2.5", "many"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", "--accept-ahead", bad])
        assert "--accept-ahead" in capsys.readouterr().err
