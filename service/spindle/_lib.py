"""Find and load libspindle_engine.so, the C++ engine, through tvm-ffi.

Search order: the ``SPINDLE_ENGINE_LIB`` environment variable (a file), ``<spindle package>/lib/``
(an installed wheel), then ``<repo>/build/cpp/`` (a development build made by ``make build-engine``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

LIB_NAME = "libspindle_engine.so"

_lock = threading.Lock()
_loaded: object | None = None


class EngineLibraryNotFound(RuntimeError):
    """No built engine library was found."""


def candidates() -> list[Path]:
    """The places searched for the library, in order."""
    paths = []
    env = os.environ.get("SPINDLE_ENGINE_LIB")
    if env:
        paths.append(Path(env))
    package_dir = Path(__file__).resolve().parent
    paths.append(package_dir / "lib" / LIB_NAME)
    paths.append(package_dir.parent.parent / "build" / "cpp" / LIB_NAME)
    return paths


def find_library() -> Path:
    tried = candidates()
    for path in tried:
        if path.is_file():
            return path
    raise EngineLibraryNotFound(
        "cannot find " + LIB_NAME + "; looked in: " + ", ".join(str(p) for p in tried)
        + " (build it with `make build-engine` or `pip install .`, or set SPINDLE_ENGINE_LIB)")


def load() -> object:
    """Load the library once per process; return the tvm_ffi module handle."""
    global _loaded  # pylint: disable=global-statement
    with _lock:
        if _loaded is None:
            # tvm must be imported first: it loads libtvm_runtime (the Relax VM and KV cache builtins)
            # and the one copy of libtvm_ffi that the engine library links against.
            import tvm  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
            import tvm_ffi  # pylint: disable=import-outside-toplevel

            _loaded = tvm_ffi.load_module(str(find_library()))
        return _loaded


def get_function(name: str):
    """A global function registered by the engine library (``spindle.engine.*``)."""
    load()
    import tvm_ffi  # pylint: disable=import-outside-toplevel

    return tvm_ffi.get_global_func(name)
