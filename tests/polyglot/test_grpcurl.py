"""The grpcurl examples, run exactly as written, through server reflection, against the live server.

The block is the fenced ```` ```bash grpcurl-examples ```` block of docs/clients.md; README.md carries the
same block, and every copy found there must be identical to it. Each command of the block runs in bash
with ``SPINDLE`` set to the threaded test server's address (the block's own assignments run first), and
its output is checked according to what it calls. A command the checks do not know fails the test, so
the block cannot hold an example that CI does not run.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, run, tail

FENCE = re.compile(r"^```bash grpcurl-examples\n(.*?)^```$", re.M | re.S)
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S+$")


def blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text(encoding="utf-8")) if path.exists() else []


def the_block() -> str:
    found = blocks(ROOT / "docs/clients.md")
    assert len(found) == 1, "docs/clients.md must hold exactly one ```bash grpcurl-examples block"
    return found[0]


def commands(block: str) -> tuple[list[str], list[str]]:
    """(assignment lines, commands) of a block, continuation lines joined, comments dropped."""
    assignments, cmds, current = [], [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line
        if current.endswith("\\"):
            current = current[:-1]
            continue
        (assignments if ASSIGNMENT.match(current) else cmds).append(current)
        current = ""
    assert not current, "the block ends inside a continued line"
    return assignments, cmds


def json_messages(text: str) -> list[dict[str, Any]]:
    """The JSON objects grpcurl printed one after another."""
    decoder, out, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        obj, end = decoder.raw_decode(text, i)
        out.append(obj)
        i = end
        while i < len(text) and text[i].isspace():
            i += 1
    return out


def field(msg: dict[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    return msg.get(camel, msg.get(snake, default))


def test_readme_copies_match_the_block():
    block = the_block()
    for copy in blocks(ROOT / "README.md"):
        assert copy == block, "README.md's grpcurl-examples block differs from docs/clients.md's"


def check_output(cmd: str, out: str, sync_generate) -> str:
    """Assert on one command's output; return what kind of example it was."""
    method = re.search(r"(\S+/\w+)\s*$", cmd)
    if re.search(r'"\$SPINDLE" list\s*$', cmd):
        services = set(out.split())
        assert {"spindle.v1.EngineService", "grpc.health.v1.Health"} <= services, out
        assert any(s.startswith("grpc.reflection.") for s in services), out
        return "list"
    if " describe spindle.v1.EngineService" in cmd:
        for rpc in ("Generate", "AddRequest", "AbortRequest", "Step", "Reset", "Metrics"):
            assert f"rpc {rpc} (" in out, out
        return "describe-service"
    if " describe spindle.v1." in cmd:
        assert "message " in out and "  // " in out, "no documented fields:\n" + out
        return "describe-message"
    assert method, f"the checks do not know this example: {cmd}"
    messages = json_messages(out)
    assert messages, out
    name = method.group(1)
    if name == "grpc.health.v1.Health/Check":
        assert messages == [{"status": "SERVING"}], out
    elif name == "spindle.v1.EngineService/Generate":
        request = json.loads(re.search(r"-d '([^']*)'", cmd).group(1))
        final = messages[-1].get("final")
        assert final is not None and all("final" not in m for m in messages[:-1]), out
        text = "".join(d.get("text", "") for m in messages for d in m.get("deltas", []))
        ids = [t for m in messages for d in m.get("deltas", []) for t in field(d, "tokenIds", "token_ids", [])]
        want = sync_generate(request["prompt"]["text"], request["config"]["max_tokens"])
        assert (text, ids) == (want.text, list(want.token_ids)), out
    elif name == "spindle.v1.EngineService/AddRequest":
        request = json.loads(re.search(r"-d '([^']*)'", cmd).group(1))
        assert field(messages[0], "requestId", "request_id") == request["request_id"], out
        assert field(messages[0], "promptTokenIds", "prompt_token_ids"), out
    elif name == "spindle.v1.EngineService/AbortRequest":
        assert len(messages) == 1 and set(messages[0]) <= {"wasLive", "was_live"}, out
    elif name == "spindle.v1.EngineService/Metrics":
        assert int(field(messages[0], "kvPagesTotal", "kv_pages_total", 0)) > 0, out
        assert int(field(messages[0], "finishedRequests", "finished_requests", 0)) > 0, out
    else:
        pytest.fail(f"the checks do not know this example: {cmd}")
    return name


def test_grpcurl_examples_run_as_written(polyglot_env, live_servers, idle_after):
    from spindle_client import SyncClient

    threaded, _ = live_servers
    assignments, cmds = commands(the_block())
    assert cmds

    def sync_generate(prompt: str, max_tokens: int):
        with SyncClient(threaded.target, timeout=60) as client:
            return client.generate(prompt, temperature=0.0, max_tokens=max_tokens)

    env = dict(polyglot_env, SPINDLE=threaded.target)
    seen, was_live, before = [], False, None
    for cmd in cmds:
        if "EngineService/AddRequest" in cmd:  # the counters before the request the next example aborts
            with SyncClient(threaded.target, timeout=30) as client:
                m = client.metrics()
                before = (m.aborted_requests, m.finished_requests)
        script = "\n".join(["set -euo pipefail", *assignments, cmd])
        proc = run(["bash", "-c", script], env=env, timeout=120)
        assert proc.returncode == 0, tail(proc)
        seen.append(check_output(cmd, proc.stdout, sync_generate))
        if seen[-1] == "spindle.v1.EngineService/AbortRequest":
            was_live = was_live or bool(field(json_messages(proc.stdout)[0], "wasLive", "was_live", False))
    if was_live:
        # The request was live on the server, so it ends and shows in the engine's counters: as an abort,
        # or, when the engine finished its last tokens in the step the abort arrived during (the tiny
        # model makes 256 tokens in well under a second), as a normal finish.
        with SyncClient(threaded.target, timeout=30) as client:
            deadline = time.monotonic() + 10
            while True:
                m = client.metrics()
                if m.aborted_requests > before[0] or m.finished_requests > before[1]:
                    break
                assert time.monotonic() < deadline, "AbortRequest said the request was live, but it never ended"
                time.sleep(0.02)
    # The README promises these; the block must keep showing them.
    for kind in ("list", "describe-service", "spindle.v1.EngineService/Generate",
                 "spindle.v1.EngineService/Metrics", "spindle.v1.EngineService/AbortRequest"):
        assert kind in seen, f"the grpcurl examples no longer show {kind}"
