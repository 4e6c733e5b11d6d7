"""Incremental detokenization and stop-string matching against a real byte-level BPE tokenizer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spindle.detokenizer import IncrementalDetokenizer, StopMatcher


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from spindle.tokenizer import Tokenizer

    return Tokenizer.from_artifact(tiny_model_dir)


def _stream(tok, ids, chunk=1, prompt=()):
    d = IncrementalDetokenizer(lambda x: tok.tokenizer.decode(x, skip_special_tokens=True), prompt)
    parts = [d.push(ids[i:i + chunk]) for i in range(0, len(ids), chunk)]
    parts.append(d.flush())
    return parts


@pytest.mark.parametrize("text", ["héllo wörld", "你好, 世界!", "emoji 🙂🚀 end", "plain ascii text", "a\nb\tc"])
@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_incremental_text_equals_full_decode_and_never_splits_characters(tok, text, chunk):
    ids = tok.encode(text)
    parts = _stream(tok, ids, chunk)
    assert "".join(parts) == tok.tokenizer.decode(ids)
    assert all("\ufffd" not in p for p in parts)


def test_long_stream_with_a_sliding_window_equals_full_decode(tok):
    text = "Über den Wolken 🙂 muss die Freiheit wohl grenzenlos sein; 你好, 世界! " * 6
    ids = tok.encode(text)
    assert len(ids) > 100
    for chunk in (1, 4):
        parts = _stream(tok, ids, chunk, prompt=tok.encode("Prefix:"))
        assert "".join(parts) == tok.tokenizer.decode(ids)
        assert all("\ufffd" not in p for p in parts)


def test_multibyte_character_split_over_byte_tokens_is_held_back(tok):
    ids = tok.encode("🙂")
    assert len(ids) > 1  # the tiny vocabulary spells it in byte tokens
    parts = _stream(tok, ids)
    assert parts[:len(ids) - 1] == [""] * (len(ids) - 1)
    assert "".join(parts) == "🙂"


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40),
       st.integers(min_value=1, max_value=4))
def test_incremental_decode_property(tok, text, chunk):
    ids = tok.encode(text)
    parts = _stream(tok, ids, chunk, prompt=tok.encode("context: "))
    assert "".join(parts) == tok.tokenizer.decode(ids)


def test_incomplete_tail_is_flushed_with_replacement(tok):
    ids = tok.encode("🙂")[:-1]
    parts = _stream(tok, ids)
    assert "".join(parts[:-1]) == ""
    assert "\ufffd" in parts[-1]


def _feed(stops, pieces):
    m = StopMatcher(stops)
    out = [m.push(p) for p in pieces]
    return "".join(out), m


def test_stop_string_is_never_released_and_text_before_it_is():
    out, m = _feed(["STOP"], ["abc S", "TO", "P tail"])
    assert out + m.flush() == "abc "
    assert m.matched == "STOP"


def test_partial_stop_prefix_is_held_then_released():
    m = StopMatcher(["STOP"])
    assert m.push("abc ST") == "abc "
    assert m.push("x") == "STx"
    assert m.flush() == ""
    assert m.matched is None


def test_earliest_of_several_stop_strings_wins():
    out, m = _feed(["world", "lo w"], ["hel", "lo world"])
    assert (out, m.matched) == ("hel", "lo w")


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="abcS TOP", max_size=30), st.lists(st.integers(1, 5), min_size=1, max_size=10))
def test_stop_matcher_property(text, cuts):
    pieces, i = [], 0
    for c in cuts * 10:
        if i >= len(text):
            break
        pieces.append(text[i:i + c])
        i += c
    pieces.append(text[i:])
    m = StopMatcher(["STOP", "aa"])
    released = "".join(m.push(p) for p in pieces) + m.flush()
    hits = [(text.find(s), s) for s in ("STOP", "aa") if text.find(s) >= 0]
    if hits:
        at, s = min(hits)
        assert released == text[:at] and m.matched == s
    else:
        assert released == text and m.matched is None
