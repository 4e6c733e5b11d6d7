"""The real default model (SmolLM2-135M-Instruct) served over gRPC on the real engine."""

from __future__ import annotations

import pytest

from spindle_client import SyncClient

pytestmark = pytest.mark.slow

# Reference: Hugging Face transformers on CPU, weights dequantized to float32, greedy (default-model notes).
GREEDY_PROMPT = "Once upon a time"
GREEDY_IDS = [6403, 1980, 253, 655]
GREEDY_CONTINUATION = (", the city of Nova Haven was a thriving metropolis, with towering skyscrapers and bustling "
                       "streets. But as the years went by, the city began to lose")


@pytest.fixture(scope="module")
def smollm2_server(smollm2_model_dir, server_thread):
    srv = server_thread(smollm2_model_dir, mode="threaded")
    yield srv
    srv.stop()


@pytest.fixture()
def smol(smollm2_server):
    with SyncClient(smollm2_server.target, timeout=300) as c:
        yield c


def test_greedy_continuation_matches_the_reference(smol):
    assert smol.tokenize(GREEDY_PROMPT) == GREEDY_IDS
    r = smol.generate(GREEDY_PROMPT, max_tokens=30, temperature=0)
    assert r.prompt_token_ids == GREEDY_IDS
    assert r.finish_reason == "length" and len(r.token_ids) == 30
    assert r.text == GREEDY_CONTINUATION


def test_chat_answers_paris(smol):
    r = smol.generate(messages=[{"role": "user", "content": "What is the capital of France?"}],
                      max_tokens=24, temperature=0)
    assert "Paris" in r.text
    assert r.finish_reason == "stop"  # the model ends its answer with its end-of-turn token
    assert r.matched_stop in smol.model_info().eos_token_ids


def test_streamed_text_is_the_full_decode(smol):
    s = smol.stream(GREEDY_PROMPT, max_tokens=20, temperature=0)
    pieces = [d.text for d in s]
    assert "".join(pieces) == smol.detokenize(s.result.token_ids, skip_special_tokens=True)
    assert all("\ufffd" not in p for p in pieces)


def test_stop_string_on_the_real_model(smol):
    r = smol.generate(GREEDY_PROMPT, max_tokens=30, temperature=0, stop_strings=["Nova"])
    assert r.finish_reason == "stop" and r.matched_stop == "Nova"
    assert r.text == ", the city of "
    m = smol.metrics()
    assert m.running_requests == 0 and m.kv_pages_used == 0
