"""The real default model (SmolLM2-135M-Instruct from its GGUF file) through the compiled library."""

from __future__ import annotations

import json

import pytest

from spindle.compiler.runner import ModelRunner
from spindle.tokenizer import Tokenizer

PROMPT = "Once upon a time"
PROMPT_IDS = [6403, 1980, 253, 655]
# Greedy continuation recorded with Hugging Face transformers (float32 weights dequantized from this file).
CONTINUATION = (", the city of Nova Haven was a thriving metropolis, with towering skyscrapers and bustling "
                "streets. But as the years went by, the city began to lose")


def _greedy(artifact, n=30):
    tok = Tokenizer.from_artifact(artifact)
    ids = tok.encode(PROMPT)
    assert ids == PROMPT_IDS
    return tok.decode(ModelRunner(artifact).generate_greedy(ids, n))


def test_package_api_returns_the_cached_artifact(smollm2_model_dir):
    """``spindle.compiler.compile_model`` with the fixture's output returns at once (content hash matches)."""
    import time

    import spindle.compiler

    t0 = time.time()
    assert spindle.compiler.compile_model(None, dtype="float32", output=smollm2_model_dir, progress=False) == smollm2_model_dir
    assert time.time() - t0 < 10


def test_config_from_gguf_metadata(smollm2_model_dir):
    cfg = json.loads((smollm2_model_dir / "spindle-config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["head_dim"], cfg["intermediate_size"], cfg["vocab_size"]) == (576, 30, 9, 3, 64, 1536, 49152)
    assert cfg["tie_word_embeddings"] and cfg["rope_theta"] == 100000.0 and cfg["context_window_size"] == 8192
    assert cfg["bos_token_id"] == 1 and cfg["eos_token_ids"] == [2] and not cfg["add_bos_token"]
    assert "<|im_start|>" in cfg["chat_template"]


def test_float32_greedy_continuation(smollm2_model_dir):
    assert _greedy(smollm2_model_dir) == CONTINUATION


def test_default_format_uses_file_blocks_and_matches(smollm2_model_factory):
    """q4_1 keeps the file's Q4_1 blocks (and its Q8_0 embedding), so it reproduces the float32 reference."""
    artifact = smollm2_model_factory("q4_1")
    cfg = json.loads((artifact / "spindle-config.json").read_text())
    assert cfg["weight_formats"] == {"linear": "q4_1", "embedding": "q8_0", "lm_head": None}
    assert _greedy(artifact) == CONTINUATION


def test_float16_greedy_continuation(smollm2_model_factory):
    """fp16 weights and activations still produce the reference text."""
    assert _greedy(smollm2_model_factory("float16")) == CONTINUATION


def test_batched_prefill_and_decode_agree_with_single(smollm2_model_dir):
    """Two prompts prefilled together decode the same tokens as each alone."""
    runner = ModelRunner(smollm2_model_dir)
    tok = Tokenizer.from_artifact(smollm2_model_dir)
    prompts = [tok.encode(PROMPT), tok.encode("The capital of France is")]
    kv = runner.create_kv_cache(max_batch_size=2)
    for i in (0, 1):
        runner.add_sequence(kv, i)
    logits = runner.prefill(kv, [0, 1], prompts)
    together = [[int(t)] for t in logits.argmax(-1)]
    for _ in range(7):
        logits = runner.decode(kv, [0, 1], [seq[-1] for seq in together])
        for seq, t in zip(together, logits.argmax(-1)):
            seq.append(int(t))
    for i, prompt in enumerate(prompts):
        assert runner.generate_greedy(prompt, 8) == together[i]


@pytest.mark.parametrize("question,answer", [("What is the capital of France?", "The capital of France is Paris.")])
def test_chat_answer(smollm2_model_dir, question, answer):
    tok = Tokenizer.from_artifact(smollm2_model_dir)
    ids = tok.encode_chat([{"role": "user", "content": question}])
    out = ModelRunner(smollm2_model_dir).generate_greedy(ids, 16, stop_ids=tok.eos_token_ids + [tok.token_to_id("<|im_end|>")])
    assert tok.decode(out).strip() == answer
