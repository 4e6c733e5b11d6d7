"""The model compiler: Llama-family checkpoints (GGUF, Hugging Face) -> TVM-compiled artifact directories.

``compile_model(source=None, dtype="q4_1", target="llvm", output=None) -> Path`` is the entry point
(see docs/compiler.md); names are imported lazily so that importing the package does not load TVM.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "compile_model": "api", "cache_dir": "api", "DEFAULT_DTYPE": "api",
    "CompileError": "build", "DTYPES": "build", "TARGETS": "build",
    "WeightError": "loaders", "default_model_path": "loaders",
    "ModelConfig": "model", "ModelRunner": "runner", "build_tiny_artifact": "testing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
