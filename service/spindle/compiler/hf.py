"""Hugging Face folders: config.json + *.safetensors (+ tokenizer.json, tokenizer_config.json)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .loaders import Checkpoint, Part, WeightError, config_from_hf, read_json


def _open_safetensors(folder: Path) -> dict[str, tuple[Path, object]]:
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise WeightError(folder, "no *.safetensors files")
    index: dict[str, tuple[Path, object]] = {}
    for f in files:
        try:
            handle = safe_open(str(f), framework="numpy")
            for key in handle.keys():
                index[key] = (f, handle)
        except Exception as exc:  # pylint: disable=broad-except
            raise WeightError(f, f"not a readable safetensors file ({exc})") from None
    return index


def load_hf_folder(folder: Path) -> Checkpoint:
    cfg_path = folder / "config.json"
    data = read_json(cfg_path)
    cfg = config_from_hf(data, cfg_path)
    index = _open_safetensors(folder)

    def part(name: str, shape: tuple[int, ...]) -> Part:
        if name not in index:
            raise WeightError(folder, "missing from every *.safetensors file", tensor=name)
        file, handle = index[name]
        try:
            arr = handle.get_tensor(name)
        except Exception as exc:  # pylint: disable=broad-except
            raise WeightError(file, f"unreadable ({exc})", tensor=name) from None
        if tuple(arr.shape) != shape:
            raise WeightError(file, f"shape {list(arr.shape)} does not match the expected {list(shape)}", tensor=name)
        if arr.dtype.kind != "f" and str(arr.dtype) != "bfloat16":
            raise WeightError(file, f"unsupported dtype {arr.dtype} (expected a float type)", tensor=name)
        return Part(shape, array=arr, name=name)

    c = cfg
    q_rows, kv_rows = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    w: dict[str, list[Part]] = {"embed_tokens.weight": [part("model.embed_tokens.weight", (c.vocab_size, c.hidden_size))]}
    for i in range(c.num_hidden_layers):
        h, pre = f"model.layers.{i}.", f"layers.{i}."
        w[pre + "self_attn.qkv_proj.weight"] = [part(h + "self_attn.q_proj.weight", (q_rows, c.hidden_size)),
                                                part(h + "self_attn.k_proj.weight", (kv_rows, c.hidden_size)),
                                                part(h + "self_attn.v_proj.weight", (kv_rows, c.hidden_size))]
        if c.attention_bias:
            w[pre + "self_attn.qkv_proj.bias"] = [part(h + "self_attn.q_proj.bias", (q_rows,)),
                                                  part(h + "self_attn.k_proj.bias", (kv_rows,)),
                                                  part(h + "self_attn.v_proj.bias", (kv_rows,))]
        w[pre + "self_attn.o_proj.weight"] = [part(h + "self_attn.o_proj.weight", (c.hidden_size, q_rows))]
        w[pre + "input_layernorm.weight"] = [part(h + "input_layernorm.weight", (c.hidden_size,))]
        w[pre + "post_attention_layernorm.weight"] = [part(h + "post_attention_layernorm.weight", (c.hidden_size,))]
        w[pre + "mlp.gate_up_proj.weight"] = [part(h + "mlp.gate_proj.weight", (c.intermediate_size, c.hidden_size)),
                                              part(h + "mlp.up_proj.weight", (c.intermediate_size, c.hidden_size))]
        w[pre + "mlp.down_proj.weight"] = [part(h + "mlp.down_proj.weight", (c.hidden_size, c.intermediate_size))]
    w["norm.weight"] = [part("model.norm.weight", (c.hidden_size,))]
    if not c.tie_word_embeddings:
        w["lm_head.weight"] = [part("lm_head.weight", (c.vocab_size, c.hidden_size))]

    tok_path = folder / "tokenizer.json"
    if not tok_path.exists():
        raise WeightError(tok_path, "missing (a Hugging Face folder needs its tokenizer.json)")
    tok_json = tok_path.read_text(encoding="utf-8")
    tok_cfg = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").exists() else {}
    gen = read_json(folder / "generation_config.json") if (folder / "generation_config.json").exists() else {}
    meta = _special_ids(tok_json, tok_cfg, data, gen)
    template = tok_cfg.get("chat_template")
    if template is None and (folder / "chat_template.jinja").exists():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(template, list):  # named templates: take "default"
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    meta["chat_template"] = template
    files = [folder / "config.json", tok_path] + sorted({f for f, _ in index.values()})
    return Checkpoint(cfg, w, tok_json, meta, source=str(folder), files=files)


def _token_id(tok_json: str, token) -> int | None:
    from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel

    if isinstance(token, dict):
        token = token.get("content")
    if not isinstance(token, str):
        return None
    return Tokenizer.from_str(tok_json).token_to_id(token)


def _special_ids(tok_json: str, tok_cfg: dict, cfg: dict, gen: dict) -> dict:
    def ids(value) -> list[int]:
        if value is None:
            return []
        return [int(v) for v in (value if isinstance(value, list) else [value])]

    eos = ids(gen.get("eos_token_id")) or ids(cfg.get("eos_token_id"))
    if not eos and tok_cfg.get("eos_token") is not None:
        tid = _token_id(tok_json, tok_cfg["eos_token"])
        eos = [tid] if tid is not None else []
    bos = gen.get("bos_token_id", cfg.get("bos_token_id"))
    if bos is None and tok_cfg.get("bos_token") is not None:
        bos = _token_id(tok_json, tok_cfg["bos_token"])
    pad = gen.get("pad_token_id", cfg.get("pad_token_id"))
    if pad is None and tok_cfg.get("pad_token") is not None:
        pad = _token_id(tok_json, tok_cfg["pad_token"])
    return {"bos_token_id": None if bos is None else int(bos), "eos_token_ids": eos,
            "pad_token_id": None if pad is None else int(np.int64(pad)),
            "add_bos_token": _adds_bos(tok_json, tok_cfg, bos)}


def _adds_bos(tok_json: str, tok_cfg: dict, bos) -> bool:
    """``add_bos_token`` from tokenizer_config.json, else whether the tokenizer's post-processor adds BOS."""
    from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel

    if "add_bos_token" in tok_cfg:
        return bool(tok_cfg["add_bos_token"])
    if bos is None:
        return False
    ids = Tokenizer.from_str(tok_json).encode("a", add_special_tokens=True).ids
    return bool(ids) and ids[0] == int(bos)
