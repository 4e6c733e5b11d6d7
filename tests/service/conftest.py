"""In-process Spindle servers on port 0, each on its own event loop thread, talked to over real channels."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from spindle.server.app import ServerOptions, SpindleServer
from spindle_client import SyncClient


class ServerThread:
    """A SpindleServer running on a private event loop in a background thread."""

    def __init__(self, model_dir: Path, load: bool = True, **options: Any):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="spindle-test-server", daemon=True)
        self._thread.start()
        opts = ServerOptions(port=0, **options)
        self.server: SpindleServer = self.call(self._make(model_dir, opts))
        self.port = self.call(self.server.start(load=load))
        self.target = f"127.0.0.1:{self.port}"

    @staticmethod
    async def _make(model_dir: Path, opts: ServerOptions) -> SpindleServer:
        return SpindleServer(model_dir, opts)

    def call(self, coro, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn, *args) -> Any:
        """Run a plain function on the server's loop (to read or change its state safely)."""
        async def wrapper():
            return fn(*args)
        return self.call(wrapper())

    @property
    def table(self):
        return self.server.servicer.table

    def stop(self) -> None:
        try:
            if not self.server.stopped:
                self.call(self.server.stop(grace=0.5))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


@pytest.fixture(scope="session")
def server_thread():
    """The ServerThread class, to start a dedicated server in a test (always stop it)."""
    return ServerThread


@pytest.fixture(scope="session")
def threaded_server(tiny_model_dir):
    srv = ServerThread(tiny_model_dir, mode="threaded")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def stepped_server(tiny_model_dir):
    srv = ServerThread(tiny_model_dir, mode="stepped")
    yield srv
    srv.stop()


@pytest.fixture()
def client(threaded_server):
    with SyncClient(threaded_server.target, timeout=60) as c:
        yield c
    # every test leaves the engine idle: nothing running, no KV pages held
    with SyncClient(threaded_server.target, timeout=60) as c:
        m = c.metrics()
        assert m.live_requests == 0, m


@pytest.fixture()
def stepped_client(stepped_server):
    with SyncClient(stepped_server.target, timeout=60) as c:
        c.reset()
        yield c
