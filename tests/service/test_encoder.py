"""PromptEncoder: prompts encoded off the event loop, batched, with errors handed to their own caller."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from spindle.compiler.testing import tiny_tokenizer_json
from spindle.server.encoder import PromptEncoder
from spindle.tokenizer import Tokenizer, TokenizerError
from spindle_client import InvalidArgumentError, SyncClient

TEXTS = ["hello world", "a b c d e f", "<|im_start|>user\nhi<|im_end|>", "the quick brown fox " * 40, ""]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_json(tiny_tokenizer_json(384), {"bos_token_id": 1, "add_bos_token": True})


def _run(coro):
    return asyncio.run(coro)


def test_results_match_the_tokenizer_inline_and_on_the_thread(tokenizer):
    async def run(inline_chars):
        enc = PromptEncoder(tokenizer, asyncio.get_running_loop(), inline_chars=inline_chars)
        try:
            got = await asyncio.gather(*[enc.encode(t) for t in TEXTS])
            return got, enc.texts
        finally:
            enc.close()

    want = [tokenizer.encode(t) for t in TEXTS]
    assert all(ids[0] == 1 for ids in want)  # the tokenizer's BOS leads each
    on_thread, threaded = _run(run(0))
    assert on_thread == want and threaded == len(want)
    inline, threaded = _run(run(10**9))
    assert inline == want and threaded == 0


def test_texts_queued_while_the_thread_works_go_in_one_batch(tokenizer):
    long_text = "the quick brown fox jumps over the lazy dog " * 20000

    async def run():
        enc = PromptEncoder(tokenizer, asyncio.get_running_loop(), inline_chars=0)
        try:
            first = asyncio.ensure_future(enc.encode(long_text))
            await asyncio.sleep(0)  # queued
            while enc._pending:  # the thread has taken the long text and is encoding it
                await asyncio.sleep(0)
            rest = await asyncio.gather(*[enc.encode(f"text {i}") for i in range(20)])
            return await first, rest, enc.batches
        finally:
            enc.close()

    first, rest, batches = _run(run())
    assert first == tokenizer.encode(long_text)
    assert rest == [tokenizer.encode(f"text {i}") for i in range(20)]
    assert batches == 2


def test_the_event_loop_runs_while_a_long_prompt_is_encoded(tokenizer):
    long_text = "the quick brown fox jumps over the lazy dog " * 20000  # ~880,000 characters

    async def run():
        enc = PromptEncoder(tokenizer, asyncio.get_running_loop())
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.01)
        start_ticks = ticks
        t0 = time.perf_counter()
        ids = await enc.encode(long_text)
        elapsed = time.perf_counter() - t0
        done = True
        await task
        enc.close()
        return ids, ticks - start_ticks, elapsed

    ids, ticks, elapsed = _run(run())
    assert ids == tokenizer.encode(long_text)
    # encoded on the loop, the ticker would not have run at all meanwhile
    assert elapsed > 0.02 and ticks >= 5, (ticks, elapsed)


class _PickyTokenizer(Tokenizer):
    """Refuses one text, as a tokenizer failing on some input would."""

    def encode(self, text, add_bos=None):
        if text == "poison":
            raise TokenizerError("text", "refused")
        return super().encode(text, add_bos)

    def encode_batch(self, texts, add_bos=None):
        if "poison" in texts:
            raise TokenizerError("texts", "refused")
        return super().encode_batch(texts, add_bos)


def test_an_error_reaches_only_the_caller_whose_text_failed():
    tok = _PickyTokenizer.from_json(tiny_tokenizer_json(384), {})

    async def run():
        enc = PromptEncoder(tok, asyncio.get_running_loop(), inline_chars=0)
        try:
            with enc._cv:  # queue all three before the thread looks: one batch
                futs = [asyncio.ensure_future(enc.encode(t)) for t in ("good", "poison", "fine")]
                await asyncio.sleep(0)
            return await asyncio.gather(*futs, return_exceptions=True)
        finally:
            enc.close()

    good, bad, fine = _run(run())
    assert good == tok.encode("good") and fine == tok.encode("fine")
    assert isinstance(bad, TokenizerError) and "refused" in str(bad)


def test_close_answers_what_is_queued_then_refuses(tokenizer):
    async def run():
        enc = PromptEncoder(tokenizer, asyncio.get_running_loop(), inline_chars=0)
        pending = asyncio.ensure_future(enc.encode("hello world"))
        await asyncio.sleep(0)
        await asyncio.get_running_loop().run_in_executor(None, enc.close)
        got = await pending
        with pytest.raises(RuntimeError, match="closed"):
            await enc.encode("x")
        return got, enc._thread.is_alive()

    got, alive = _run(run())
    assert got == tokenizer.encode("hello world") and not alive


def test_the_server_encodes_long_prompts_on_its_encoder_thread(threaded_server):
    encoder = threaded_server.server.servicer.encoder
    model = threaded_server.server.model
    text = "the quick brown fox jumps over the lazy dog. " * 200
    before = encoder.texts
    messages = [{"role": "user", "content": text}]
    with SyncClient(threaded_server.target, timeout=60) as c:
        got = c.tokenize(text)
        short = c.tokenize("hello")
        chat = c.tokenize(messages=messages)
        with pytest.raises(InvalidArgumentError) as info:  # encoded off the loop, then too long for the model
            c.generate(messages, max_tokens=2, temperature=0)
    assert got == model.tokenizer.encode(text)
    assert short == model.tokenizer.encode("hello")
    assert chat == model.tokenizer.encode_chat(messages)
    assert info.value.fields == ["prompt"] and f"has {len(chat)} tokens" in info.value.message
    assert encoder.texts == before + 3  # the long texts went to the thread, the short one did not
    assert encoder.thread_id != threading.get_ident()
