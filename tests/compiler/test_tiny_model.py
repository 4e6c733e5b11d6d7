"""The compiled tiny Llama against the independent numpy reference, through TVM's paged KV cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spindle.compiler.runner import ModelRunner
from spindle.compiler.testing import random_params, tiny_config

from .reference import ReferenceLlama

PROMPTS = [[5, 17, 200, 33, 91, 4, 250, 12, 77, 3, 140], [8, 99], [300, 1, 2, 45, 46, 47, 48, 49, 50, 51, 52,
                                                                     53, 54, 55, 56, 57, 58, 59, 60, 61, 62]]
DECODE_STEPS = 6


def _run_and_compare(artifact, atol: float, check_argmax: bool = True):
    runner = ModelRunner(artifact)
    cfg = runner.config
    ref = ReferenceLlama(cfg, random_params(tiny_config(), seed=0))
    kv = runner.create_kv_cache(max_batch_size=4)
    ids = [0, 1, 2]
    for i in ids:
        runner.add_sequence(kv, i)
    got = runner.prefill(kv, ids, PROMPTS)
    want = np.stack([ref.forward(i, p) for i, p in zip(ids, PROMPTS)])
    worst = [float(np.abs(got - want).max())]
    if check_argmax:
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
    tokens = [int(t) for t in want.argmax(-1)]
    for _ in range(DECODE_STEPS):
        got = runner.decode(kv, ids, tokens)
        want = np.stack([ref.forward(i, [t]) for i, t in zip(ids, tokens)])
        worst.append(float(np.abs(got - want).max()))
        if check_argmax:
            np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
        tokens = [int(t) for t in want.argmax(-1)]
    assert max(worst) < atol, f"max abs logit diff per step {worst}"
    return worst


def test_artifact_layout(tiny_model_dir):
    for name in ("model.so", "params/tensor-cache.json", "tokenizer.json", "spindle-config.json"):
        assert (tiny_model_dir / name).exists(), name
    cfg = json.loads((tiny_model_dir / "spindle-config.json").read_text())
    assert cfg["format_version"] == 1 and cfg["dtype"] == "float32" and cfg["target"] == "llvm"
    assert cfg["param_names"][0] == "embed_tokens.weight"
    assert cfg["head_dim"] == 16 and cfg["num_key_value_heads"] == 2
    assert cfg["eos_token_ids"] and cfg["chat_template"]


def test_float32_matches_reference(tiny_model_dir):
    _run_and_compare(tiny_model_dir, atol=1e-4)


def test_embed_returns_activation_rows(tiny_model_dir):
    runner = ModelRunner(tiny_model_dir)
    out = runner.embed([3, 7, 3]).numpy()
    table = random_params(tiny_config(), seed=0)["embed_tokens.weight"]
    np.testing.assert_array_equal(out, table[[3, 7, 3]])


def test_sequences_are_independent(tiny_model_dir):
    """A sequence's logits do not depend on what else is in the batch."""
    runner = ModelRunner(tiny_model_dir)
    kv = runner.create_kv_cache(max_batch_size=4)
    runner.add_sequence(kv, 0)
    alone = runner.prefill(kv, [0], [PROMPTS[1]])
    kv2 = runner.create_kv_cache(max_batch_size=4)
    runner.add_sequence(kv2, 5)
    runner.add_sequence(kv2, 9)
    both = runner.prefill(kv2, [5, 9], [PROMPTS[0], PROMPTS[1]])
    np.testing.assert_allclose(both[1], alone[0], atol=1e-5)


@pytest.mark.parametrize("dims", [{"tie_word_embeddings": False, "attention_bias": True, "model_type": "qwen2"}])
def test_untied_head_and_qkv_bias(tiny_model_factory, dims):
    artifact = tiny_model_factory("float32", seed=0, **dims)
    runner = ModelRunner(artifact)
    ref = ReferenceLlama(runner.config, random_params(tiny_config(**dims), seed=0))
    kv = runner.create_kv_cache(max_batch_size=2)
    runner.add_sequence(kv, 0)
    got = runner.prefill(kv, [0], [PROMPTS[0]])
    np.testing.assert_allclose(got[0], ref.forward(0, PROMPTS[0]), atol=1e-4)
    got = runner.decode(kv, [0], [7])
    np.testing.assert_allclose(got[0], ref.forward(0, [7]), atol=1e-4)
