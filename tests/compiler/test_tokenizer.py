"""Tokenizer from GGUF metadata, chat template rendering and incremental detokenization."""

from __future__ import annotations

import pytest
from gguf import GGUFReader
from hypothesis import given, settings
from hypothesis import strategies as st

from spindle.compiler.testing import CHAT_TEMPLATE, tiny_tokenizer_json
from spindle.tokenizer import ChatTemplateError, Tokenizer, TokenizerError, tokenizer_json_from_gguf


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_gguf_path) -> Tokenizer:
    reader = GGUFReader(str(smollm2_gguf_path))
    fields = {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}
    return Tokenizer.from_json(tokenizer_json_from_gguf(fields), {
        "bos_token_id": fields["tokenizer.ggml.bos_token_id"], "eos_token_ids": [fields["tokenizer.ggml.eos_token_id"]],
        "chat_template": fields["tokenizer.chat_template"], "add_bos_token": fields["tokenizer.ggml.add_bos_token"]})


@pytest.fixture(scope="module")
def tiny_tokenizer() -> Tokenizer:
    return Tokenizer.from_json(tiny_tokenizer_json(384), {"eos_token_ids": [2], "chat_template": CHAT_TEMPLATE})


def test_smollm2_ids(smollm2_tokenizer):
    assert smollm2_tokenizer.encode("Once upon a time") == [6403, 1980, 253, 655]
    assert smollm2_tokenizer.vocab_size == 49152


def test_smollm2_digits_split_and_specials(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = tok.encode("2024<|im_end|>")
    assert len(ids) == 5 and ids[-1] == tok.token_to_id("<|im_end|>") == 2
    assert tok.decode(ids) == "2024" and tok.decode(ids, skip_special_tokens=False) == "2024<|im_end|>"


@pytest.mark.parametrize("text", ["Hello, world!", "  leading spaces\nand\ttabs", "naïve café – 東京 🚀", ""])
def test_roundtrip(smollm2_tokenizer, text):
    assert smollm2_tokenizer.decode(smollm2_tokenizer.encode(text)) == text


def test_smollm2_chat_template(smollm2_tokenizer):
    text = smollm2_tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    ids = smollm2_tokenizer.encode_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert ids[0] == smollm2_tokenizer.token_to_id("<|im_start|>")
    assert smollm2_tokenizer.decode(ids, skip_special_tokens=False).startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_encode_batch_matches_encode(smollm2_tokenizer):
    tok = smollm2_tokenizer
    texts = ["Once upon a time", "2024<|im_end|>", "", "naïve café – 東京 🚀 " * 50, "<|im_start|>user\nHi"]
    for flag in (None, True, False):
        assert tok.encode_batch(texts, flag) == [tok.encode(t, add_bos=flag) for t in texts]
    with pytest.raises(TokenizerError, match=r"texts\[1\]"):
        tok.encode_batch(["a", 3])


def test_bos_is_added_where_asked():
    tok = Tokenizer.from_json(tiny_tokenizer_json(384), {"bos_token_id": 1, "add_bos_token": True})
    assert tok.encode("ab")[0] == 1 and tok.encode("ab", add_bos=False)[0] != 1
    assert [tok.encode_batch(["ab"], flag)[0][0] for flag in (None, False, True)] == \
        [1, tok.encode("ab", add_bos=False)[0], 1]


def test_chat_template_compiled_once_and_recompiled_when_changed(tiny_tokenizer):
    tok = Tokenizer.from_json(tiny_tokenizer_json(384), {"chat_template": CHAT_TEMPLATE})
    msgs = [{"role": "user", "content": "a"}]
    first = tok.apply_chat_template(msgs)
    compiled = tok._compiled_template
    assert compiled is not None and compiled[0] == CHAT_TEMPLATE
    assert tok.apply_chat_template(msgs) == first and tok._compiled_template is compiled
    tok.chat_template = "{% for m in messages %}[{{ m.content }}]{% endfor %}"
    assert tok.apply_chat_template(msgs) == "[a]"
    assert tok._compiled_template[0] == tok.chat_template


def test_chat_template_without_generation_prompt(tiny_tokenizer):
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert tiny_tokenizer.apply_chat_template(msgs, add_generation_prompt=False) == \
        "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n"


@pytest.mark.parametrize("messages,field", [([], "messages"), ([{"role": "user"}], "messages[0]"),
                                            ("hello", "messages"), ([{"role": "user", "content": 3}], "messages[0]")])
def test_chat_bad_messages(tiny_tokenizer, messages, field):
    with pytest.raises(ChatTemplateError) as info:
        tiny_tokenizer.apply_chat_template(messages)
    assert info.value.field == field


def test_chat_template_errors():
    tok = Tokenizer.from_json(tiny_tokenizer_json(384), {"chat_template": "{{ raise_exception('no system role') }}"})
    with pytest.raises(ChatTemplateError, match="no system role"):
        tok.apply_chat_template([{"role": "system", "content": "x"}])
    broken = Tokenizer.from_json(tiny_tokenizer_json(384), {"chat_template": "{% for %}"})
    with pytest.raises(ChatTemplateError, match="chat_template: rendering failed"):
        broken.apply_chat_template([{"role": "user", "content": "x"}])
    none = Tokenizer.from_json(tiny_tokenizer_json(384), {})
    with pytest.raises(ChatTemplateError, match="no chat template"):
        none.apply_chat_template([{"role": "user", "content": "x"}])


def test_decode_rejects_bad_ids(tiny_tokenizer):
    with pytest.raises(TokenizerError) as info:
        tiny_tokenizer.decode([1, 2, 384])
    assert info.value.field == "token_ids[2]"
    with pytest.raises(TokenizerError, match="text: expected a string"):
        tiny_tokenizer.encode(b"bytes")


def test_incremental_decoder_holds_partial_characters(smollm2_tokenizer):
    tok = smollm2_tokenizer
    text = "Tokyo 東京 🚀 done"
    ids = tok.encode(text)
    dec = tok.incremental_decoder()
    pieces = [dec.push([i]) for i in ids]
    assert "".join(pieces) + dec.flush() == text
    assert all("\ufffd" not in p for p in pieces)


def test_unsupported_gguf_tokenizer():
    with pytest.raises(TokenizerError, match="tokenizer.ggml.model: .*only byte-level BPE"):
        tokenizer_json_from_gguf({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(TokenizerError, match="tokenizer.ggml.merges: GGUF: merge 0 'a b' uses or makes a token"):
        tokenizer_json_from_gguf({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"],
                                  "tokenizer.ggml.merges": ["a b"]})
    with pytest.raises(TokenizerError, match="tokenizer.ggml.pre: unsupported pre-tokenizer 'mystery'"):
        tokenizer_json_from_gguf({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b", "ab"],
                                  "tokenizer.ggml.merges": ["a b"], "tokenizer.ggml.pre": "mystery"})


def test_tokenizer_from_artifact(tiny_model_dir):
    tok = Tokenizer.from_artifact(tiny_model_dir)
    assert tok.eos_token_ids == [0, 2] and tok.vocab_size == 384
    assert tok.decode(tok.encode("Once upon a time")) == "Once upon a time"


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), max_codepoint=0x3FFFF), max_size=60))
def test_roundtrip_any_text(smollm2_tokenizer, text):
    """decode(encode(text)) is the text itself for every string whose bytes SmolLM2's vocabulary holds
    (it lacks 21 byte tokens: a few control bytes and the UTF-8 lead bytes of planes 4-16)."""
    assert smollm2_tokenizer.decode(smollm2_tokenizer.encode(text), skip_special_tokens=False) == text
