"""Weight-format conversion: float32 checkpoint tensors (model naming) to the packed parameters of a format."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tvm

from .build import CompileError, activation_dtype
from .model import LlamaForCausalLM, ModelConfig


def make_model(cfg: ModelConfig, target: tvm.target.Target, dtype: str) -> LlamaForCausalLM:
    """The nn module for a weight format (float formats use ``nn.Linear`` in the activation dtype)."""
    if dtype in ("float32", "float16"):
        return LlamaForCausalLM(cfg, target, dtype=activation_dtype(dtype))
    raise CompileError(f"dtype: {dtype!r} needs spindle.compiler.quantization, which is not available")


def convert_params(params: Mapping[str, np.ndarray], cfg: ModelConfig, dtype: str) -> dict[str, np.ndarray]:
    """Float tensors in model naming -> the arrays the library's packed parameters expect."""
    del cfg
    if dtype in ("float32", "float16"):
        return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in params.items()}
    raise CompileError(f"dtype: {dtype!r} needs spindle.compiler.quantization, which is not available")
