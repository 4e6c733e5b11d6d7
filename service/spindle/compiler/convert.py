"""Weight formats: build the nn model for a format and convert checkpoint parts to its packed parameters.

- ``float32`` / ``float16``: every tensor dequantized to float and cast (activations in that dtype).
- ``q8_0`` / ``q4_1``: every linear layer a ``quantization.QuantizedLinear`` in that format, activations
  float32. A GGUF tensor already in the format keeps its blocks bit for bit; anything else is quantized
  the way llama.cpp does. The embedding table (and a tied or untied output head) stays in the quantized
  format its file holds it in, or q8_0 when it comes as float, as llama.cpp keeps its output layer at a
  higher precision than the 4-bit body.
"""

from __future__ import annotations

import os
from typing import Iterator, Mapping

import numpy as np
import tvm
from tvm.relax.frontend import nn

from .build import DTYPES, CompileError, activation_dtype
from .loaders import Part
from .model import LlamaForCausalLM, ModelConfig

QUANTIZED = ("q8_0", "q4_1")


def embedding_format(dtype: str, parts: list[Part] | None) -> str:
    """The format of the embedding table / output head for weight format ``dtype``."""
    if dtype not in QUANTIZED:
        return dtype
    if parts and len(parts) == 1 and parts[0].fmt in QUANTIZED:
        return parts[0].fmt
    return "q8_0"


FLOAT_KERNEL_ENV = "SPINDLE_FMATMUL"
FLOAT_KERNELS = ("c", "tvm")


def matmul_kernel(dtype: str, target: str) -> str | None:
    """The decode matmul kernel for ``dtype`` on ``target``. Float formats on the CPU: ``c`` (the C decode
    kernel, `kernels/fmatmul.c`) unless ``$SPINDLE_FMATMUL=tvm`` (TVM's scheduled kernels); None on GPUs.
    Quantized formats:
    ``int8`` (activations rounded to int8, integer dot products) on CPUs with AVX-512 VNNI unless
    ``$SPINDLE_QMATMUL`` says otherwise, ``float`` elsewhere and on GPU targets. Part of the cache key."""
    if dtype not in QUANTIZED:
        if target != "llvm":
            return None
        kernel = os.environ.get(FLOAT_KERNEL_ENV) or "c"
        if kernel not in FLOAT_KERNELS:
            raise CompileError(f"{FLOAT_KERNEL_ENV}: expected one of {FLOAT_KERNELS}, got {kernel!r}")
        return kernel
    if target != "llvm":
        return "float"
    from .quantization import resolve_kernel  # pylint: disable=import-outside-toplevel

    return resolve_kernel()


BLOCKS_ENV = "SPINDLE_DECODE_BLOCKS"
BLOCKS = ("fused", "separate")


def decode_blocks(dtype: str, target: str) -> str | None:
    """How ``batch_decode`` runs a decoder layer on the int8 kernel or the C float kernel: ``fused`` (two C
    blocks around the attention: the input norm folded into the QKV matmul, then o_proj, norm, gate_up,
    SwiGLU and down in one parallel region; the final norm folded into the output head) unless
    ``$SPINDLE_DECODE_BLOCKS=separate`` (a kernel per op, for side-by-side runs); None where neither kernel
    is used. Part of the cache key."""
    if matmul_kernel(dtype, target) not in ("int8", "c"):
        return None
    blocks = os.environ.get(BLOCKS_ENV) or "fused"
    if blocks not in BLOCKS:
        raise CompileError(f"{BLOCKS_ENV}: expected one of {BLOCKS}, got {blocks!r}")
    return blocks


def make_model(cfg: ModelConfig, target: tvm.target.Target, dtype: str, embed_fmt: str | None = None,
               head_fmt: str | None = None) -> LlamaForCausalLM:
    """The nn module for weight format ``dtype`` (see the module docstring)."""
    if dtype not in DTYPES:
        raise CompileError(f"dtype: unsupported {dtype!r} (supported: {', '.join(DTYPES)})")
    act = activation_dtype(dtype)
    if dtype not in QUANTIZED:
        return LlamaForCausalLM(cfg, target, dtype=act, float_kernel=matmul_kernel(dtype, target.kind.name),
                                fused_blocks=decode_blocks(dtype, target.kind.name) == "fused")
    from .quantization import QuantizedLinear  # pylint: disable=import-outside-toplevel

    for name, dim in (("hidden_size", cfg.hidden_size), ("intermediate_size", cfg.intermediate_size),
                      ("num_attention_heads * head_dim", cfg.num_attention_heads * cfg.head_dim)):
        if dim % 32:
            raise CompileError(f"{name}: {dim} is not a multiple of 32, the block size of {dtype}")

    kernel = matmul_kernel(dtype, target.kind.name)

    def linear(in_f: int, out_f: int, bias: bool) -> nn.Module:
        return QuantizedLinear(in_f, out_f, dtype, bias=bias, out_dtype=act, kernel=kernel)

    embed = QuantizedLinear(cfg.hidden_size, cfg.vocab_size, embed_fmt or "q8_0", out_dtype=act, kernel=kernel)
    head = None if cfg.tie_word_embeddings else QuantizedLinear(cfg.hidden_size, cfg.vocab_size, head_fmt or "q8_0",
                                                                 out_dtype=act, kernel=kernel)
    return LlamaForCausalLM(cfg, target, dtype=act, linear=linear, embedding=embed, lm_head=head,
                            fused_blocks=decode_blocks(dtype, target.kind.name) == "fused")


def _concat_float(parts: list[Part]) -> np.ndarray:
    return np.concatenate([p.to_float() for p in parts], axis=0) if len(parts) > 1 else parts[0].to_float()


def _quantized_arrays(parts: list[Part], fmt: str, tiles: bool = False) -> dict[str, np.ndarray]:
    from . import quantization  # pylint: disable=import-outside-toplevel

    if tiles:
        return quantization.to_tiles(fmt, _quantized_arrays(parts, fmt))

    pieces = []
    for p in parts:
        if p.fmt == fmt:
            pieces.append(quantization.from_gguf_blocks(fmt, np.ascontiguousarray(p.raw).reshape(-1), p.shape))
        else:
            pieces.append(quantization.quantize(fmt, p.to_float()))
    if len(pieces) == 1:
        return pieces[0]
    return {k: np.concatenate([piece[k] for piece in pieces], axis=0) for k in pieces[0]}


def convert_weights(weights: Mapping[str, list[Part]], dtype: str, embed_fmt: str | None = None,
                    head_fmt: str | None = None, progress: bool = False,
                    target: str = "llvm") -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(packed parameter name, array)`` for the model :func:`make_model` builds for ``target``
    (the int8 kernel's layers hold their blocks in column tiles, ``quantization.to_tiles``)."""
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    from . import quantization  # pylint: disable=import-outside-toplevel

    act = activation_dtype(dtype)
    tiles = matmul_kernel(dtype, target) == "int8"
    items = tqdm(weights.items(), total=len(weights), desc=f"converting weights to {dtype}", unit="tensor",
                 disable=not progress, leave=False)
    for name, parts in items:
        stem, _, leaf = name.rpartition(".")
        if dtype in QUANTIZED and leaf == "weight" and (parts[0].array is None or len(parts[0].shape) == 2) \
                and "norm" not in stem:
            fmt = embed_fmt if stem == "embed_tokens" else head_fmt if stem == "lm_head" else dtype
            arrays = _quantized_arrays(parts, fmt or "q8_0", tiles)
            rows = sum(p.shape[0] for p in parts)
            if tiles and stem.endswith("mlp.gate_up_proj") and quantization.gate_up_interleaved(rows // 2):
                arrays = {**arrays, "qweight": quantization.interleave_gate_up(arrays["qweight"])}
            for key, arr in arrays.items():
                yield f"{stem}.{key}", arr
        else:
            yield name, np.ascontiguousarray(_concat_float(parts), dtype=act)


def convert_params(params: Mapping[str, np.ndarray], cfg: ModelConfig, dtype: str,
                   target: str = "llvm") -> dict[str, np.ndarray]:
    """Float tensors in model naming (e.g. random test weights) -> the packed parameters of ``dtype``."""
    del cfg
    weights = {k: [Part(tuple(v.shape), array=v, name=k)] for k, v in params.items()}
    return dict(convert_weights(weights, dtype, target=target))
