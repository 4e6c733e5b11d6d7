"""Spindle's CPU attention kernels (``spindle.compiler.attention``) inside compiled tiny models, against the
independent numpy reference: GQA ratios, head dims, prompts over several KV pages, chunked prefill onto a
cached prefix packed with a new sequence, batched decode, and Mistral's sliding window."""

from __future__ import annotations

import numpy as np
import pytest

from spindle.compiler.model import ModelConfig
from spindle.compiler.runner import ModelRunner
from spindle.compiler.testing import random_params, tiny_config

from .reference import ReferenceLlama

LONG = [(7 * i + 3) % 380 + 3 for i in range(100)]  # 100 tokens: seven 16-token pages


def run_scenario(artifact, params, atol: float = 1e-4) -> float:
    """Packed prefill of a long and a short prompt, batched decode, then a packed prefill that continues
    the long sequence (paged prefill over its cached prefix) next to a new sequence, then decode again.
    Every step's logits are compared with the reference; returns the largest difference."""
    runner = ModelRunner(artifact)
    ref = ReferenceLlama(runner.config, params)
    kv = runner.create_kv_cache(max_batch_size=4, max_total_seq_len=512, prefill_chunk_size=128)
    worst = 0.0

    def check(got, seq_ids, token_lists, what):
        nonlocal worst
        want = np.stack([ref.forward(i, t) for i, t in zip(seq_ids, token_lists)])
        diff = float(np.abs(got - want).max())
        worst = max(worst, diff)
        assert diff < atol, f"{what}: max abs logit difference {diff}"
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1), err_msg=what)
        return [int(t) for t in want.argmax(-1)]

    for sid in (0, 1):
        runner.add_sequence(kv, sid)
    prompts = [LONG[:75], [9, 8, 7, 6, 5]]  # 75 keys: 4 x 16-key tiles and a rest
    tokens = check(runner.prefill(kv, [0, 1], prompts), [0, 1], prompts, "packed prefill")
    for step in range(3):
        tokens = check(runner.decode(kv, [0, 1], tokens), [0, 1], [[t] for t in tokens], f"decode {step}")
    runner.add_sequence(kv, 2)
    chunks = [LONG[75:], [11, 12, 13, 14, 15, 16, 17, 18, 19]]
    tokens = check(runner.prefill(kv, [0, 2], chunks), [0, 2], chunks, "chunk onto a cached prefix")
    ids = [0, 2, 1]
    tokens = tokens + [5]
    for step in range(2):
        tokens = check(runner.decode(kv, ids, tokens), ids, [[t] for t in tokens], f"decode after chunk {step}")
    return worst


@pytest.mark.parametrize("dims", [
    {"num_attention_heads": 8, "num_key_value_heads": 2},   # GQA 4:1, head_dim 8
    {"hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 1},  # head_dim 32, MQA
    {"hidden_size": 128, "num_attention_heads": 2, "num_key_value_heads": 2},  # head_dim 64, MHA
], ids=["gqa4-d8", "mqa-d32", "mha-d64"])
def test_attention_shapes_match_reference(tiny_model_factory, dims):
    run_scenario(tiny_model_factory("float32", seed=1, **dims), random_params(tiny_config(**dims), seed=1))


def test_default_tiny_model_scenario(tiny_model_dir):
    run_scenario(tiny_model_dir, random_params(tiny_config(), seed=0))


MISTRAL = {"model_type": "mistral", "sliding_window": 12}


def test_sliding_window_matches_reference(tiny_model_factory):
    """A tiny Mistral with a 12-position window: prompts, chunks and decode steps all cross the window."""
    params = random_params(tiny_config(**MISTRAL), seed=2)
    run_scenario(tiny_model_factory("float32", seed=2, **MISTRAL), params)


def test_sliding_window_changes_the_result(tiny_model_factory):
    """The window is really applied: past it the logits differ from full attention's."""
    params = random_params(tiny_config(**MISTRAL), seed=2)
    runner = ModelRunner(tiny_model_factory("float32", seed=2, **MISTRAL))
    kv = runner.create_kv_cache()
    runner.add_sequence(kv, 0)
    got = runner.prefill(kv, [0], [LONG[:40]])[0]
    full = ReferenceLlama({**runner.config, "sliding_window": 0}, params).forward(0, LONG[:40])
    windowed = ReferenceLlama(runner.config, params).forward(0, LONG[:40])
    assert np.abs(full - windowed).max() > 1e-2
    np.testing.assert_allclose(got, windowed, atol=1e-4)


def test_window_covering_the_context_is_full_attention():
    cfg = tiny_config(model_type="mistral", sliding_window=4096, context_window_size=512)
    assert cfg.effective_sliding_window == 0
    assert tiny_config(**MISTRAL).effective_sliding_window == 12


@pytest.mark.parametrize("value", [-1, 1.5, True, "8"])
def test_bad_sliding_window_names_the_field(value):
    with pytest.raises(ValueError, match="sliding_window"):
        ModelConfig(sliding_window=value)


def test_float16_kernels_scenario(tiny_model_factory):
    """float16 activations and KV cache through the same kernels (float32 inside): fp16-level agreement."""
    params = {k: v.astype(np.float16).astype(np.float32) for k, v in random_params(tiny_config(), seed=0).items()}
    runner = ModelRunner(tiny_model_factory("float16"))
    ref = ReferenceLlama(runner.config, params)
    kv = runner.create_kv_cache()
    runner.add_sequence(kv, 0)
    runner.prefill(kv, [0], [LONG[:40]])
    got = runner.prefill(kv, [0], [LONG[40:]])[0]
    want = ref.forward(0, LONG)
    assert np.abs(got - want).max() < 0.1
