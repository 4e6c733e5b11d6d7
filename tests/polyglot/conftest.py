"""Live servers and toolchains for the polyglot client tests.

One threaded and one stepped Spindle server (in-process, each on its own event loop thread, on a free
loopback port, serving the tiny compiled model) are started once per session and shared by every
language's test run. Each run gets their addresses and the Python SyncClient's greedy result for a fixed
prompt through the environment:

``SPINDLE_TEST_TARGET``          threaded server, ``127.0.0.1:PORT``
``SPINDLE_TEST_STEPPED_TARGET``  stepped server
``SPINDLE_TEST_EXPECTED``        JSON ``{prompt, max_tokens, token_ids, text, finish_reason}``

The toolchain pieces (buf, grpcurl, protoc, plugins, npm packages) come from ``make polyglot-tools``,
which the ``polyglot_tools`` fixture runs (a no-op once installed).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".cache" / "bin"

PROMPT = "Once upon a time"
MAX_TOKENS = 12


def run(cmd: list[str] | str, *, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 600,
        shell: bool = False) -> subprocess.CompletedProcess:
    """Run a command, capturing its output; the caller asserts on the return code."""
    return subprocess.run(cmd, cwd=cwd, env=env, timeout=timeout, shell=shell, text=True, encoding="utf-8",
                          errors="replace", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL)


def tail(proc: subprocess.CompletedProcess, n: int = 6000) -> str:
    return f"exit {proc.returncode}, command {proc.args!r}:\n{proc.stdout[-n:]}"


@pytest.fixture(scope="session")
def polyglot_tools() -> dict[str, str]:
    """Install the pinned tools (``make polyglot-tools``) and return an environment that finds them."""
    proc = run(["make", "--no-print-directory", "polyglot-tools"], timeout=1800)
    assert proc.returncode == 0, tail(proc)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(TOOLS_BIN), str(ROOT / "clients/typescript/node_modules/.bin"),
                                   env.get("PATH", "")])
    return env


class ServerThread:
    """A SpindleServer on a private event loop in a background thread, listening on a free loopback port."""

    def __init__(self, model_dir: Path, mode: str):
        from spindle.server.app import ServerOptions, SpindleServer

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"polyglot-{mode}-server", daemon=True)
        self._thread.start()

        async def make() -> SpindleServer:
            return SpindleServer(model_dir, ServerOptions(host="127.0.0.1", port=0, mode=mode))

        self.server = self._call(make())
        self.port = self._call(self.server.start())
        self.target = f"127.0.0.1:{self.port}"

    def _call(self, coro: Any, timeout: float = 300.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self._call(self.server.stop(grace=0.5), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


@pytest.fixture(scope="session")
def live_servers(tiny_model_dir):
    """``(threaded, stepped)`` servers shared by every language's run."""
    threaded = ServerThread(tiny_model_dir, "threaded")
    try:
        stepped = ServerThread(tiny_model_dir, "stepped")
    except BaseException:
        threaded.stop()
        raise
    yield threaded, stepped
    stepped.stop()
    threaded.stop()


@pytest.fixture(scope="session")
def expected(live_servers) -> dict[str, Any]:
    """The Python SyncClient's greedy result for PROMPT, which every other language must reproduce."""
    from spindle_client import SyncClient

    threaded, _ = live_servers
    with SyncClient(threaded.target, timeout=60) as client:
        result = client.generate(PROMPT, temperature=0.0, max_tokens=MAX_TOKENS)
    assert len(result.token_ids) > 0, result
    return {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "token_ids": list(result.token_ids), "text": result.text,
            "finish_reason": f"FINISH_REASON_{result.finish_reason.upper()}"}


@pytest.fixture(scope="session")
def polyglot_env(polyglot_tools, live_servers, expected) -> dict[str, str]:
    """The environment each language's test run gets."""
    threaded, stepped = live_servers
    env = dict(polyglot_tools)
    env["SPINDLE_TEST_TARGET"] = threaded.target
    env["SPINDLE_TEST_STEPPED_TARGET"] = stepped.target
    env["SPINDLE_TEST_EXPECTED"] = json.dumps(expected)
    return env


@pytest.fixture()
def idle_after(live_servers):
    """After a language's run, the threaded server settles with no live request and no KV page held
    (aborts are applied between engine steps, so this waits a little for the last ones)."""
    yield
    from spindle_client import SyncClient

    threaded, _ = live_servers
    deadline = time.monotonic() + 10
    with SyncClient(threaded.target, timeout=30) as client:
        while True:
            m = client.metrics()
            if m.live_requests == 0 and m.running_requests == 0 and m.kv_pages_used == 0:
                return
            assert time.monotonic() < deadline, f"the server is not idle after the run: {m}"
            time.sleep(0.02)
