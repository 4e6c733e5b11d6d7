"""Tiny random-weight Llama artifacts for tests: real compiled libraries, real tokenizer, seconds to build."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .build import DTYPES, CompileError, artifact_lock, compiler_fingerprint, make_target, write_artifact
from .model import ModelConfig

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """Once upon a time there was a small engine that served words to anyone who asked.
It read tokens, wrote tokens, and kept every page of its cache in order.
The quick brown fox jumps over the lazy dog. A paged cache holds keys and values for each sequence.
Prefill reads the whole prompt at once; decode writes one token at a time for every running request.
Numbers like 0 1 2 3 4 5 6 7 8 9 10 100 1000 and punctuation, commas; colons: and questions? also appear!
"""

TINY_DIMS: dict[str, Any] = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 128, "vocab_size": 384, "context_window_size": 512, "prefill_chunk_size": 512,
    "max_batch_size": 16, "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
    "attention_bias": False, "model_type": "llama",
}


def tiny_tokenizer_json(vocab_size: int) -> str:
    """A byte-level BPE with exactly ``vocab_size`` tokens: 3 specials, 256 bytes and merges learned from a
    fixed text; when the text runs out of merges the rest are filler tokens ``<|unused_N|>`` (in the
    vocabulary, never produced by encoding, decoded as their own text)."""
    import json as _json  # pylint: disable=import-outside-toplevel

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=import-outside-toplevel

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise CompileError(f"vocab_size: a byte-level tokenizer needs at least {256 + len(SPECIAL_TOKENS)}, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(vocab_size, 1024), special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=1)
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    data = _json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for i in range(vocab_size - len(vocab)):
        vocab[f"<|unused_{i}|>"] = len(vocab)
    return _json.dumps(data, ensure_ascii=False)


def random_params(cfg: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """Float32 weights in the model's own parameter naming (fused qkv and gate/up projections)."""
    rng = np.random.default_rng(seed)
    h, d, nq, nkv, inter = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size

    def lin(out_f: int, in_f: int) -> np.ndarray:
        return (rng.standard_normal((out_f, in_f)) / np.sqrt(in_f)).astype("float32")

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(h)).astype("float32")

    p: dict[str, np.ndarray] = {"embed_tokens.weight": rng.standard_normal((cfg.vocab_size, h)).astype("float32")}
    for i in range(cfg.num_hidden_layers):
        pre = f"layers.{i}."
        p[pre + "input_layernorm.weight"] = norm()
        p[pre + "self_attn.qkv_proj.weight"] = lin((nq + 2 * nkv) * d, h)
        if cfg.attention_bias:
            p[pre + "self_attn.qkv_proj.bias"] = (0.1 * rng.standard_normal((nq + 2 * nkv) * d)).astype("float32")
        p[pre + "self_attn.o_proj.weight"] = lin(h, nq * d)
        p[pre + "post_attention_layernorm.weight"] = norm()
        p[pre + "mlp.gate_up_proj.weight"] = lin(2 * inter, h)
        p[pre + "mlp.down_proj.weight"] = lin(h, inter)
    p["norm.weight"] = norm()
    if not cfg.tie_word_embeddings:
        p["lm_head.weight"] = lin(cfg.vocab_size, h)
    return p


def tiny_config(**dims: Any) -> ModelConfig:
    return ModelConfig(**{**TINY_DIMS, **dims})


def tiny_content_hash(*, dtype: str, seed: int, target: str, schedule: bool = True, **dims: Any) -> str:
    cfg = tiny_config(**dims)
    from .convert import decode_blocks, matmul_kernel  # pylint: disable=import-outside-toplevel

    key = json.dumps({"cfg": cfg.to_dict(), "dtype": dtype, "seed": seed, "target": target, "schedule": schedule,
                      "matmul_kernel": matmul_kernel(dtype, target), "decode_blocks": decode_blocks(dtype, target),
                      "compiler": compiler_fingerprint(),
                      "testing": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def build_tiny_artifact(out_dir: str | Path, *, dtype: str = "float32", seed: int = 0, target: str = "llvm",
                        schedule: bool = True, **dims: Any) -> Path:
    """Build a tiny random-weight Llama artifact (docs/design.md section 1) in ``out_dir``.

    ``dims`` override :data:`TINY_DIMS` (any :class:`ModelConfig` field). The float32 weights are drawn
    from ``seed``; other formats are converted from them the way a checkpoint would be.
    """
    from .convert import convert_params, decode_blocks, embedding_format, make_model, matmul_kernel  # pylint: disable=import-outside-toplevel

    if dtype not in DTYPES:
        raise CompileError(f"dtype: unsupported {dtype!r} (supported: {', '.join(DTYPES)})")
    cfg = tiny_config(**dims)
    tvm_target = make_target(target)
    embed_fmt = embedding_format(dtype, None)
    model = make_model(cfg, tvm_target, dtype, embed_fmt=embed_fmt, head_fmt=embed_fmt)
    params = convert_params(random_params(cfg, seed), cfg, dtype, target=target)
    meta = {"bos_token_id": None, "eos_token_ids": [0, 2], "pad_token_id": 0,
            "chat_template": CHAT_TEMPLATE, "add_bos_token": False}
    content_hash = tiny_content_hash(dtype=dtype, seed=seed, target=target, schedule=schedule, **dims)
    return write_artifact(Path(out_dir), model=model, params=params, tokenizer_json=tiny_tokenizer_json(cfg.vocab_size),
                          meta=meta, dtype=dtype, target=target, content_hash=content_hash,
                          source=f"tiny-random-llama(seed={seed})", schedule=schedule,
                          extra={"matmul_kernel": matmul_kernel(dtype, target),
                                 "decode_blocks": decode_blocks(dtype, target)})


def cached_tiny_artifact(cache_root: str | Path, *, dtype: str = "float32", seed: int = 0, target: str = "llvm",
                         schedule: bool = True, **dims: Any) -> Path:
    """:func:`build_tiny_artifact` under ``cache_root/<content hash>``, reused when already built."""
    key = tiny_content_hash(dtype=dtype, seed=seed, target=target, schedule=schedule, **dims)
    out = Path(cache_root) / f"tiny-{dtype}-{key}"
    if not (out / "spindle-config.json").exists():
        with artifact_lock(out):  # test sessions running side by side share the cache
            if not (out / "spindle-config.json").exists():
                build_tiny_artifact(out, dtype=dtype, seed=seed, target=target, schedule=schedule, **dims)
    return out
