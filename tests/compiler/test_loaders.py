"""Checkpoint loaders: Hugging Face folders and GGUF files written as their ecosystems write them."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spindle.compiler.api import compile_model
from spindle.compiler.build import CompileError
from spindle.compiler.loaders import WeightError, load_checkpoint
from spindle.compiler.testing import random_params, tiny_config, tiny_tokenizer_json

from .checkpoints import write_gguf, write_hf_folder
from .reference import compare_quantized_with_reference, compare_with_reference

CFG = tiny_config()
PARAMS = random_params(CFG, seed=1)


def _deq(w: np.ndarray, kind: str) -> np.ndarray:
    qtype = getattr(gguf.GGMLQuantizationType, kind)
    return gguf.quants.dequantize(gguf.quants.quantize(w.astype(np.float32), qtype), qtype).reshape(w.shape)


def _gguf_reference(params, linear="Q4_1", embed="Q8_0"):
    return {k: (_deq(v, embed) if k.startswith(("embed_tokens", "lm_head")) else _deq(v, linear)) if v.ndim == 2 else v
            for k, v in params.items()}


@pytest.fixture(scope="module")
def tokenizer_json():
    return tiny_tokenizer_json(CFG.vocab_size)


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory, tokenizer_json):
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", CFG, PARAMS, tokenizer_json)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory, tokenizer_json):
    return write_hf_folder(tmp_path_factory.mktemp("hf") / "tiny-llama", CFG, PARAMS, tokenizer_json)


def test_hf_folder_float32(hf_folder, artifact_cache_root):
    out = compile_model(hf_folder, dtype="float32", output=artifact_cache_root / "hf-tiny-float32", progress=False)
    cfg = json.loads((out / "spindle-config.json").read_text())
    assert cfg["eos_token_ids"] == [2] and cfg["bos_token_id"] == 1 and cfg["source"].endswith("tiny-llama")
    assert max(compare_with_reference(out, PARAMS, decode_steps=3)) < 1e-4


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_hf_qwen2_bias_and_untied_head(tmp_path, tokenizer_json, artifact_cache_root, dtype):
    import ml_dtypes

    cfg = tiny_config(model_type="qwen2", attention_bias=True, tie_word_embeddings=False)
    params = random_params(cfg, seed=2)
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16
    folder = write_hf_folder(tmp_path / "qwen", cfg, {k: v.astype(np_dtype) for k, v in params.items()},
                             tokenizer_json, dtype=np_dtype)
    out = compile_model(folder, dtype="float32", output=artifact_cache_root / f"hf-qwen2-{dtype}", progress=False)
    ref = {k: v.astype(np_dtype).astype(np.float32) for k, v in params.items()}
    assert max(compare_with_reference(out, ref, decode_steps=2)) < 1e-4


def test_gguf_qwen2_is_not_permuted(tmp_path, tokenizer_json, artifact_cache_root):
    """qwen2 GGUF files keep Hugging Face's row order and carry the q/k/v biases."""
    cfg = tiny_config(model_type="qwen2", attention_bias=True)
    params = random_params(cfg, seed=4)
    path = write_gguf(tmp_path / "qwen2.gguf", cfg, params, tokenizer_json, linear_type="F16", embed_type="F32",
                      arch="qwen2")
    out = compile_model(path, dtype="float32", output=artifact_cache_root / "gguf-qwen2", progress=False)
    ref = {k: (v.astype(np.float16).astype(np.float32) if v.ndim == 2 and not k.startswith("embed") else v)
           for k, v in params.items()}
    assert max(compare_with_reference(out, ref, decode_steps=2)) < 1e-4


@settings(max_examples=40, deadline=None)
@given(n_head=st.integers(1, 6), half=st.integers(1, 8), cols=st.integers(1, 3))
def test_unpermute_inverts_llama_cpp_permutation(n_head, half, cols):
    from spindle.compiler.loaders import _unpermute_order

    from .checkpoints import _permute

    w = np.arange(n_head * 2 * half * cols, dtype=np.float32).reshape(n_head * 2 * half, cols)
    np.testing.assert_array_equal(_permute(w, n_head)[_unpermute_order(w.shape[0], n_head)], w)


def test_gguf_unpermutes_qk_and_dequantizes(gguf_file, artifact_cache_root):
    """A llama.cpp-layout file (permuted Q/K, Q4_1 linears, Q8_0 embedding) matches its dequantized weights."""
    out = compile_model(gguf_file, dtype="float32", output=artifact_cache_root / "gguf-tiny-float32", progress=False)
    assert max(compare_with_reference(out, _gguf_reference(PARAMS), decode_steps=3)) < 1e-4


def test_gguf_q4_1_keeps_blocks(gguf_file, artifact_cache_root):
    """Compiled as q4_1, the file's blocks are used as they are: the same weights as the float32 build."""
    out = compile_model(gguf_file, dtype="q4_1", output=artifact_cache_root / "gguf-tiny-q4_1", progress=False)
    kernel = json.loads((out / "spindle-config.json").read_text())["matmul_kernel"]
    if kernel == "int8":  # activations rounded to int8: compare with a reference that rounds them the same way
        diffs, ties = compare_quantized_with_reference(out, _gguf_reference(PARAMS), decode_steps=3)
        assert diffs[ties == 0].max() < 1e-4 and diffs.max() < 0.5
    else:
        assert kernel == "float"
        assert max(compare_with_reference(out, _gguf_reference(PARAMS), decode_steps=3)) < 1e-4
    ckpt = load_checkpoint(gguf_file)
    part = ckpt.weights["layers.0.mlp.down_proj.weight"][0]
    assert part.fmt == "q4_1" and part.raw is not None


def test_gguf_tokenizer_and_meta(gguf_file, tokenizer_json):
    from tokenizers import Tokenizer

    ckpt = load_checkpoint(gguf_file)
    ours, theirs = Tokenizer.from_str(ckpt.tokenizer_json), Tokenizer.from_str(tokenizer_json)
    text = "Once upon a time, the engine served 42 words.<|im_end|>"
    assert ours.encode(text).ids == theirs.encode(text).ids
    assert ckpt.meta["eos_token_ids"] == [2] and ckpt.meta["chat_template"]


# ---- errors name the file and the tensor --------------------------------------------------------

def test_gguf_missing_tensor(tmp_path, tokenizer_json):
    path = write_gguf(tmp_path / "m.gguf", CFG, PARAMS, tokenizer_json, skip=("blk.1.ffn_up.weight",))
    with pytest.raises(WeightError, match=r"m\.gguf: tensor 'blk\.1\.ffn_up\.weight': missing") as info:
        load_checkpoint(path)
    assert info.value.tensor == "blk.1.ffn_up.weight" and info.value.file == str(path)


def test_gguf_wrong_shape(tmp_path, tokenizer_json):
    bad = {"blk.0.attn_v.weight": (np.zeros((CFG.hidden_size, CFG.hidden_size), np.float32), "F32")}
    path = write_gguf(tmp_path / "s.gguf", CFG, PARAMS, tokenizer_json, override=bad)
    with pytest.raises(WeightError, match=r"s\.gguf: tensor 'blk\.0\.attn_v\.weight': shape \[64, 64\] "
                                          r"does not match the expected \[32, 64\]"):
        load_checkpoint(path)


def test_gguf_unsupported_type(tmp_path, tokenizer_json):
    bad = {"blk.0.ffn_gate.weight": (PARAMS["layers.0.mlp.gate_up_proj.weight"][:128], "Q5_0")}
    path = write_gguf(tmp_path / "t.gguf", CFG, PARAMS, tokenizer_json, override=bad)
    with pytest.raises(WeightError, match=r"tensor 'blk\.0\.ffn_gate\.weight': unsupported GGUF tensor type Q5_0"):
        load_checkpoint(path)


def test_gguf_unknown_architecture(tmp_path, tokenizer_json):
    path = write_gguf(tmp_path / "a.gguf", CFG, PARAMS, tokenizer_json, arch="gpt2")
    with pytest.raises(WeightError, match=r"a\.gguf: unsupported architecture 'gpt2'"):
        load_checkpoint(path)


@pytest.mark.parametrize("metadata,scaling,window", [
    ({}, None, 0),
    ({"{arch}.rope.scaling.type": "none"}, None, 0),
    ({"{arch}.rope.scaling.type": "linear", "{arch}.rope.scaling.factor": 4.0}, {"rope_type": "linear", "factor": 4.0}, 0),
    ({"{arch}.rope.scale_linear": 2.0}, {"rope_type": "linear", "factor": 2.0}, 0),
    ({"{arch}.rope.scaling.type": "yarn", "{arch}.rope.scaling.factor": 4.0,
      "{arch}.rope.scaling.original_context_length": 128, "{arch}.rope.scaling.yarn_beta_fast": 32.0},
     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128, "beta_fast": 32.0}, 0),
    ({"{arch}.attention.sliding_window": 64, "{arch}.rope.dimension_count": 16}, None, 64),
])
def test_gguf_rope_scaling_and_window(tmp_path, tokenizer_json, metadata, scaling, window):
    path = write_gguf(tmp_path / "r.gguf", CFG, PARAMS, tokenizer_json, metadata=metadata)
    cfg = load_checkpoint(path).config
    assert cfg.rope_scaling == scaling
    assert cfg.sliding_window == window


@pytest.mark.parametrize("metadata,extra,pattern", [
    ({"{arch}.rope.scaling.type": "longrope", "{arch}.rope.scaling.factor": 4.0}, None,
     r"r\.gguf: unsupported RoPE scaling type 'longrope' in llama\.rope\.scaling\.type"),
    ({"{arch}.rope.scaling.type": "linear", "{arch}.rope.scaling.factor": -1.0}, None,
     r"r\.gguf: bad model metadata: rope_scaling: linear scaling needs a positive factor"),
    ({"{arch}.rope.dimension_count": 8}, None,
     r"r\.gguf: partial rotary embeddings are not supported \(llama\.rope\.dimension_count is 8, the head dimension 16\)"),
    ({}, {"rope_freqs.weight": np.ones(8, np.float32)},
     r"r\.gguf: tensor 'rope_freqs\.weight': per-dimension RoPE frequency factors are not supported"),
])
def test_gguf_rope_metadata_errors(tmp_path, tokenizer_json, metadata, extra, pattern):
    path = write_gguf(tmp_path / "r.gguf", CFG, PARAMS, tokenizer_json, metadata=metadata, extra=extra)
    with pytest.raises(WeightError, match=pattern):
        load_checkpoint(path)


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"this is not a model" * 10)
    with pytest.raises(WeightError, match=r"junk\.gguf: not a readable GGUF file"):
        load_checkpoint(path)


def test_hf_missing_tensor(tmp_path, tokenizer_json):
    folder = write_hf_folder(tmp_path / "hf", CFG, PARAMS, tokenizer_json, shards=1)
    from safetensors.numpy import load_file, save_file

    shard = next(folder.glob("*.safetensors"))
    tensors = load_file(str(shard))
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, str(shard))
    with pytest.raises(WeightError, match=r"tensor 'model\.layers\.1\.self_attn\.k_proj\.weight': missing"):
        load_checkpoint(folder)


def test_hf_wrong_shape(tmp_path, tokenizer_json):
    params = dict(PARAMS)
    params["layers.0.mlp.down_proj.weight"] = params["layers.0.mlp.down_proj.weight"][:, :64]
    folder = write_hf_folder(tmp_path / "hf", CFG, params, tokenizer_json, shards=1)
    with pytest.raises(WeightError, match=r"model-00001-of-00001\.safetensors: tensor "
                                          r"'model\.layers\.0\.mlp\.down_proj\.weight': shape \[64, 64\]"):
        load_checkpoint(folder)


@pytest.mark.parametrize("change,pattern", [
    ({"model_type": "gpt_neox"}, r"config\.json: unsupported model_type 'gpt_neox'"),
    ({"num_key_value_heads": 3}, r"config\.json: num_key_value_heads: 3 does not divide"),
    ({"hidden_size": None}, r"config\.json: hidden_size: expected a positive integer"),
])
def test_hf_bad_config(tmp_path, tokenizer_json, change, pattern):
    folder = write_hf_folder(tmp_path / "hf", CFG, PARAMS, tokenizer_json, shards=1)
    data = json.loads((folder / "config.json").read_text())
    data.update(change)
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(WeightError, match=pattern):
        load_checkpoint(folder)


def test_hf_config_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(WeightError, match=r"config\.json: not valid JSON"):
        load_checkpoint(tmp_path)


def test_missing_source(tmp_path):
    with pytest.raises(CompileError, match=r"nope\.gguf: no such file or directory"):
        compile_model(tmp_path / "nope.gguf", dtype="float32", progress=False)


@pytest.mark.parametrize("kwargs,pattern", [({"dtype": "int3"}, r"dtype: unsupported 'int3'"),
                                            ({"target": "metal"}, r"target: unsupported 'metal'")])
def test_compile_model_bad_arguments(gguf_file, kwargs, pattern):
    with pytest.raises(CompileError, match=pattern):
        compile_model(gguf_file, progress=False, **kwargs)


HF_BASE = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 256, "max_position_embeddings": 512}


@pytest.mark.parametrize("extra,window,scaling", [
    ({}, 0, None),
    ({"model_type": "mistral", "sliding_window": 64}, 64, None),
    ({"model_type": "mistral", "sliding_window": None}, 0, None),
    # Qwen2 configs name a window that is off unless use_sliding_window is set
    ({"model_type": "qwen2", "sliding_window": 64, "use_sliding_window": False}, 0, None),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, 0, {"rope_type": "linear", "factor": 2.0}),
    ({"rope_scaling": {"rope_type": "default"}}, 0, None),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 256}}, 0,
     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 256}),
])
def test_hf_config_window_and_rope_scaling(tmp_path, extra, window, scaling):
    from spindle.compiler.loaders import config_from_hf

    cfg = config_from_hf({**HF_BASE, **extra}, tmp_path / "config.json")
    assert cfg.sliding_window == window
    assert cfg.rope_scaling == scaling


@pytest.mark.parametrize("extra,pattern", [
    ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, r"config\.json: rope_scaling: unsupported rope_type 'dynamic'"),
    ({"rope_scaling": {"type": "linear", "factor": 0}}, r"config\.json: rope_scaling: linear scaling needs a positive factor"),
    ({"model_type": "mistral", "sliding_window": -4}, r"config\.json: sliding_window: expected a non-negative integer"),
])
def test_hf_config_bad_window_or_scaling(tmp_path, extra, pattern):
    from spindle.compiler.loaders import config_from_hf

    with pytest.raises(WeightError, match=pattern):
        config_from_hf({**HF_BASE, **extra}, tmp_path / "config.json")
