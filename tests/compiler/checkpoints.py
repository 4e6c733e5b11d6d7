"""Write tiny checkpoints the way their ecosystems do: a Hugging Face folder and a llama.cpp-style GGUF file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spindle.compiler.model import ModelConfig
from spindle.compiler.testing import CHAT_TEMPLATE


def hf_tensors(cfg: ModelConfig, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Model-naming params (fused qkv / gate_up) -> Hugging Face names and separate projections."""
    q_rows, kv_rows = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    out = {"model.embed_tokens.weight": params["embed_tokens.weight"], "model.norm.weight": params["norm.weight"]}
    if "lm_head.weight" in params:
        out["lm_head.weight"] = params["lm_head.weight"]
    for i in range(cfg.num_hidden_layers):
        p, h = f"layers.{i}.", f"model.layers.{i}."
        qkv = params[p + "self_attn.qkv_proj.weight"]
        out[h + "self_attn.q_proj.weight"], out[h + "self_attn.k_proj.weight"], out[h + "self_attn.v_proj.weight"] = \
            np.split(qkv, [q_rows, q_rows + kv_rows])
        if p + "self_attn.qkv_proj.bias" in params:
            b = params[p + "self_attn.qkv_proj.bias"]
            out[h + "self_attn.q_proj.bias"], out[h + "self_attn.k_proj.bias"], out[h + "self_attn.v_proj.bias"] = \
                np.split(b, [q_rows, q_rows + kv_rows])
        out[h + "self_attn.o_proj.weight"] = params[p + "self_attn.o_proj.weight"]
        out[h + "mlp.gate_proj.weight"], out[h + "mlp.up_proj.weight"] = np.split(params[p + "mlp.gate_up_proj.weight"], 2)
        out[h + "mlp.down_proj.weight"] = params[p + "mlp.down_proj.weight"]
        out[h + "input_layernorm.weight"] = params[p + "input_layernorm.weight"]
        out[h + "post_attention_layernorm.weight"] = params[p + "post_attention_layernorm.weight"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def write_hf_folder(folder: Path, cfg: ModelConfig, params: dict[str, np.ndarray], tokenizer_json: str,
                    dtype: str = "float32", shards: int = 2) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = hf_tensors(cfg, params)
    names = sorted(tensors)
    for s in range(shards):
        part = {n: tensors[n].astype(dtype) for n in names[s::shards]}
        save_file(part, str(folder / f"model-{s + 1:05d}-of-{shards:05d}.safetensors"))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": cfg.model_type, "hidden_size": cfg.hidden_size,
              "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
              "num_key_value_heads": cfg.num_key_value_heads, "intermediate_size": cfg.intermediate_size,
              "vocab_size": cfg.vocab_size, "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
              "tie_word_embeddings": cfg.tie_word_embeddings, "max_position_embeddings": cfg.context_window_size,
              "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": np.dtype(dtype).name}
    if cfg.model_type != "qwen2":
        config["attention_bias"] = cfg.attention_bias
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text(tokenizer_json)
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>", "add_bos_token": False}))
    return folder


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf Q/K row permutation (rotate-half halves -> interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, cfg: ModelConfig, params: dict[str, np.ndarray], tokenizer_json: str,
               linear_type: str = "Q4_1", embed_type: str = "Q8_0", arch: str = "llama",
               skip: tuple[str, ...] = (), override: dict[str, tuple[np.ndarray, str]] | None = None,
               metadata: dict[str, object] | None = None, extra: dict[str, np.ndarray] | None = None) -> Path:
    """A GGUF file as llama.cpp's converter writes it (permuted Q/K for llama, block-quantized linears).

    ``skip`` leaves tensors out; ``override`` replaces a tensor by (array, GGML type name), for error tests;
    ``metadata`` adds keys (``{arch}`` in a key is the architecture; str, int -> uint32, float -> float32);
    ``extra`` adds float32 tensors.
    """
    import gguf
    from gguf import GGMLQuantizationType as Q

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.context_window_size)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_vocab_size(cfg.vocab_size)
    tj = json.loads(tokenizer_json)
    vocab = tj["model"]["vocab"]
    tokens = [None] * len(vocab)
    for tok, i in vocab.items():
        tokens[i] = tok
    types = [1] * len(tokens)
    for added in tj["added_tokens"]:
        if added["id"] >= len(tokens):
            tokens.extend([None] * (added["id"] + 1 - len(tokens)))
            types.extend([1] * (added["id"] + 1 - len(types)))
        tokens[added["id"]] = added["content"]
        types[added["id"]] = 3 if added["special"] else 4
    merges = [" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template(CHAT_TEMPLATE)
    for key, value in (metadata or {}).items():
        key = key.replace("{arch}", arch)
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_float32(key, float(value))
    for name, arr in (extra or {}).items():
        w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))

    def put(name: str, arr: np.ndarray, kind: str) -> None:
        if name in skip:
            return
        if override and name in override:
            arr, kind = override[name]
        qtype = getattr(Q, kind)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if kind == "F32":
            w.add_tensor(name, arr)
        elif kind == "F16":
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)

    hf = hf_tensors(cfg, params)
    put("token_embd.weight", hf["model.embed_tokens.weight"], embed_type)
    put("output_norm.weight", hf["model.norm.weight"], "F32")
    if "lm_head.weight" in hf:
        put("output.weight", hf["lm_head.weight"], embed_type)
    for i in range(cfg.num_hidden_layers):
        h, b = f"model.layers.{i}.", f"blk.{i}."
        q, k = hf[h + "self_attn.q_proj.weight"], hf[h + "self_attn.k_proj.weight"]
        if arch == "llama":
            q, k = _permute(q, cfg.num_attention_heads), _permute(k, cfg.num_key_value_heads)
        put(b + "attn_q.weight", q, linear_type)
        put(b + "attn_k.weight", k, linear_type)
        put(b + "attn_v.weight", hf[h + "self_attn.v_proj.weight"], linear_type)
        put(b + "attn_output.weight", hf[h + "self_attn.o_proj.weight"], linear_type)
        put(b + "ffn_gate.weight", hf[h + "mlp.gate_proj.weight"], linear_type)
        put(b + "ffn_up.weight", hf[h + "mlp.up_proj.weight"], linear_type)
        put(b + "ffn_down.weight", hf[h + "mlp.down_proj.weight"], linear_type)
        for proj in ("q", "k", "v"):
            if h + f"self_attn.{proj}_proj.bias" in hf:
                put(b + f"attn_{proj}.bias", hf[h + f"self_attn.{proj}_proj.bias"], "F32")
        put(b + "attn_norm.weight", hf[h + "input_layernorm.weight"], "F32")
        put(b + "ffn_norm.weight", hf[h + "post_attention_layernorm.weight"], "F32")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
