"""Prompt tokenization off the event loop.

Encoding a prompt takes ~40 us for 150 characters and ~12 ms for 27,000, during which an event loop
would serve no other stream. ``PromptEncoder`` runs long texts on one thread of its own: the loop queues
the text and awaits a future; the thread takes every text queued since its last call and encodes them
in one call of the Rust tokenizer (``Tokenizer.encode_batch``), which lets go of the GIL while it works,
so the loop goes on taking calls and sending messages meanwhile, and hands the results back with one
wake-up per batch.

Short texts (under ``inline_chars``) are encoded on the loop at once: the hand-off costs more than they
do. The thread's results need the GIL to come back, and a busy loop holds it for up to the interpreter's
switch interval (5 ms), so a burst of short prompts measured no earlier intake through the thread.

The thread is the server's tokenizer parallelism: the tokenizers library's own thread pool is left off
(``TOKENIZERS_PARALLELISM=false`` unless the environment says otherwise), so that no pool of spinning
threads competes with the model's compute threads for the cores.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from typing import Any

from spindle.tokenizer import Tokenizer


def quiet_tokenizer_pool() -> None:
    """Leave the tokenizers library's thread pool off unless the environment asks for it."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class PromptEncoder:
    """Encodes texts on a thread of its own; ``await encode(text)`` from the event loop it was made on."""

    def __init__(self, tokenizer: Tokenizer, loop: asyncio.AbstractEventLoop, max_batch: int = 64,
                 inline_chars: int = 1024):
        self.tokenizer = tokenizer
        #: Texts shorter than this are encoded on the calling (event loop) thread.
        self.inline_chars = inline_chars
        self._loop = loop
        self._max_batch = max(1, max_batch)
        self._pending: deque[tuple[str, asyncio.Future]] = deque()
        self._cv = threading.Condition()
        self._closed = False
        #: How many batches and texts the thread has encoded (for tests and metrics).
        self.batches = 0
        self.texts = 0
        self._thread = threading.Thread(target=self._run, name="spindle-tokenizer", daemon=True)
        self._thread.start()

    @property
    def thread_id(self) -> int | None:
        return self._thread.ident

    async def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (as ``Tokenizer.encode``); raises what encoding it raised."""
        if len(text) < self.inline_chars:
            return self.tokenizer.encode(text)
        fut = self._loop.create_future()
        with self._cv:
            if self._closed:
                raise RuntimeError("the prompt encoder is closed")
            self._pending.append((text, fut))
            if len(self._pending) == 1:
                self._cv.notify()
        return await fut

    def close(self) -> None:
        """Stop the thread once it has encoded what is queued (waiting callers get their results)."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if not self._pending:
                    return
                n = min(len(self._pending), self._max_batch)
                batch = [self._pending.popleft() for _ in range(n)]
            results = self._encode(batch)
            self.batches += 1
            self.texts += len(batch)
            try:
                self._loop.call_soon_threadsafe(_settle, batch, results)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _encode(self, batch: list[tuple[str, asyncio.Future]]) -> list[Any]:
        """One result per text: its ids, or the exception encoding it raised."""
        try:
            return list(self.tokenizer.encode_batch([text for text, _ in batch]))
        except Exception:  # noqa: BLE001 - find which text failed: encode them one at a time
            results: list[Any] = []
            for text, _ in batch:
                try:
                    results.append(self.tokenizer.encode(text))
                except Exception as exc:  # noqa: BLE001 - handed to that caller
                    results.append(exc)
            return results


def _settle(batch: list[tuple[str, asyncio.Future]], results: list[Any]) -> None:
    for (_, fut), result in zip(batch, results):
        if fut.done():  # the caller was cancelled meanwhile
            continue
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)
