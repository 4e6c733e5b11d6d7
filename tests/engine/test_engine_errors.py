"""Bad input gets a typed error naming the field, from Python type checks and C++ range checks alike."""

from __future__ import annotations

import json
import shutil

import pytest

from spindle.engine import (DuplicateRequestError, Engine, EngineConfig, GenerationConfig, InvalidRequestError)


def field_of(fn) -> str:
    with pytest.raises(InvalidRequestError) as err:
        fn()
    assert err.value.message
    return err.value.field


@pytest.mark.parametrize("overrides, field", [
    ({"mode": "turbo"}, "mode"),
    ({"device": "tpu"}, "device"),
    ({"max_num_sequence": 0}, "max_num_sequence"),
    ({"max_num_sequence": 1000}, "max_num_sequence"),
    ({"max_num_sequence": "4"}, "max_num_sequence"),
    ({"max_num_sequence": True}, "max_num_sequence"),
    ({"max_total_sequence_length": -1}, "max_total_sequence_length"),
    ({"max_single_sequence_length": 100_000}, "max_single_sequence_length"),
    ({"prefill_chunk_size": 100_000}, "prefill_chunk_size"),
    ({"kv_cache_page_size": 8}, "kv_cache_page_size"),
    ({"num_threads": -2}, "num_threads"),
])
def test_engine_config_errors(tiny_model_dir, overrides, field):
    assert field_of(lambda: Engine(EngineConfig(model=str(tiny_model_dir), **overrides))) == field


def test_bad_artifacts_name_the_model(tiny_model_dir, tmp_path):
    assert field_of(lambda: Engine(EngineConfig(model=str(tmp_path / "missing")))) == "model"
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    cfg = json.loads((broken / "spindle-config.json").read_text())
    cfg["vocab_size"] = "many"
    (broken / "spindle-config.json").write_text(json.dumps(cfg))
    with pytest.raises(InvalidRequestError) as err:
        Engine(EngineConfig(model=str(broken)))
    assert err.value.field == "model" and "vocab_size" in err.value.message
    (broken / "spindle-config.json").write_text(json.dumps({**cfg, "vocab_size": 384}))
    (broken / "model.so").write_bytes(b"not a library")
    assert field_of(lambda: Engine(EngineConfig(model=str(broken)))) == "model"


@pytest.mark.parametrize("args, field", [
    (("", [1], None), "request_id"),
    (("r", [], None), "token_ids"),
    (("r", "hello", None), "token_ids"),
    (("r", [1, 1.5], None), "token_ids"),
    (("r", [1, -3], None), "token_ids"),
    (("r", [1, 384], None), "token_ids"),
    (("r", [1] * 512, None), "token_ids"),
    (("r", [1], {"n": 0}), "n"),
    (("r", [1], {"n": 2.0}), "n"),
    (("r", [1], {"temperature": -1.0}), "temperature"),
    (("r", [1], {"temperature": float("inf")}), "temperature"),
    (("r", [1], {"top_p": 0.0}), "top_p"),
    (("r", [1], {"top_k": -1}), "top_k"),
    (("r", [1], {"min_p": 1.5}), "min_p"),
    (("r", [1], {"repetition_penalty": 0.0}), "repetition_penalty"),
    (("r", [1], {"frequency_penalty": 3.0}), "frequency_penalty"),
    (("r", [1], {"presence_penalty": -2.5}), "presence_penalty"),
    (("r", [1], {"logit_bias": {999: 1.0}}), "logit_bias"),
    (("r", [1], {"logit_bias": {5: 500.0}}), "logit_bias"),
    (("r", [1], {"logit_bias": [1, 2]}), "logit_bias"),
    (("r", [1], {"seed": 2 ** 70}), "seed"),
    (("r", [1], {"max_tokens": 0}), "max_tokens"),
    (("r", [1], {"stop_token_ids": [400]}), "stop_token_ids"),
    (("r", [1], {"ignore_eos": 1}), "ignore_eos"),
    (("r", [1], {"logprobs": "yes"}), "logprobs"),
    (("r", [1], {"top_logprobs": 21, "logprobs": True}), "top_logprobs"),
    (("r", [1], {"top_logprobs": 2}), "top_logprobs"),
])
def test_request_errors_name_the_field(make_engine, args, field):
    engine = make_engine()
    rid, tokens, gen = args
    config = GenerationConfig(**gen) if gen is not None else None
    assert field_of(lambda: engine.add_request(rid, tokens, config)) == field
    assert engine.empty() and engine.metrics().waiting == 0


def test_duplicate_ids_are_rejected_while_active(make_engine):
    engine = make_engine()
    engine.add_request("same", [1, 2], GenerationConfig(max_tokens=2))
    with pytest.raises(DuplicateRequestError):
        engine.add_request("same", [3], GenerationConfig())
    while not engine.empty():
        engine.step()
    engine.add_request("same", [3], GenerationConfig(max_tokens=1))  # finished ids can be reused
    assert engine.metrics().waiting == 1
