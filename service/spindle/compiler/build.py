"""Lower a ``LlamaForCausalLM`` to a Relax VM library and write the model artifact directory."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

import spindle

from .model import LlamaForCausalLM, ModelConfig

FORMAT_VERSION = 1
DTYPES = ("float32", "float16", "q8_0", "q4_1")
TARGETS = ("llvm", "cuda")
PAGE_SIZE = 16


class CompileError(ValueError):
    """A model cannot be compiled as asked; the message names the field or file at fault."""


def activation_dtype(dtype: str) -> str:
    """The activation (and KV cache) dtype of a weight format (docs/design.md, section 1)."""
    return "float16" if dtype == "float16" else "float32"


def make_target(target: str) -> tvm.target.Target:
    if target == "llvm":
        return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
    if target == "cuda":
        return tvm.target.Target({"kind": "cuda", "arch": os.environ.get("SPINDLE_CUDA_ARCH", "sm_80")},
                                 host={"kind": "llvm"})
    raise CompileError(f"target: unsupported {target!r} (supported: {', '.join(TARGETS)})")


# Sources that do not change what an artifact holds (drivers, CLI, test helpers) stay out of the hash.
_NOT_IN_FINGERPRINT = {"api.py", "command.py", "runner.py", "testing.py"}


def compiler_fingerprint() -> str:
    """A hash of the compiler sources that shape an artifact and the TVM versions: part of every cache key."""
    h = hashlib.sha256()
    h.update(tvm.__version__.encode())
    h.update(tvm_ffi.__version__.encode())
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")) + sorted(root.rglob("*.c")) + [root.parent / "tokenizer.py"]:
        if path.parent == root and path.name in _NOT_IN_FINGERPRINT:
            continue
        h.update(str(path.relative_to(root.parent)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def set_runtime_threads(num_threads: int | None = None) -> int:
    """Give TVM's thread pool one thread per core (it defaults to half the cores on x86)."""
    n = num_threads or int(os.environ.get("TVM_NUM_THREADS", 0)) or os.cpu_count() or 1
    os.environ["TVM_NUM_THREADS"] = str(n)
    tvm.get_global_func("runtime.config_threadpool")(0, n)
    return n


def _relax_pipeline(target: tvm.target.Target, schedule: bool = True):
    """Spindle's CPU pipeline (``schedules.cpu_pipeline``) for llvm, TVM's CUDA pipeline for cuda.

    ``schedule=False`` leaves the CPU kernels unscheduled (slow; a reference for schedule bugs).
    """
    if target.kind.name == "llvm":
        from .schedules import cpu_pipeline  # pylint: disable=import-outside-toplevel

        return cpu_pipeline(target, schedule=schedule)
    from tvm.relax.backend.cuda import pipeline as cuda_pipeline  # pylint: disable=import-outside-toplevel

    return cuda_pipeline.get_default_pipeline(target)  # dlight GPU rules: Matmul, GEMV, Reduction, Fallback


def _check_cuda_toolchain() -> None:
    """Register TVM's CUDA compile callback (NVRTC or nvcc, ``tvm.support.nvcc``).

    On a host with a CUDA runtime, TVM compiles the kernels to cubin while building; on a host without
    one (like a CPU-only build machine) the library keeps the CUDA source and the GPU host compiles it
    when it loads the library (which must ``import tvm.support.nvcc`` first).
    """
    importlib.import_module("tvm.support.nvcc")


def _attach_bounds(mod: tvm.IRModule, cfg: ModelConfig) -> tvm.IRModule:
    bounds = {"seq_len": cfg.prefill_chunk_size, "batch_size": cfg.max_batch_size}
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function) and gv.name_hint in ("embed", "batch_prefill", "batch_decode"):
            func = func.with_attr("tir_var_upper_bound", bounds)
            func = func.with_attr("tir_non_negative_var", ["seq_len", "batch_size"])
            mod[gv] = func
    return mod


def export_model(model: LlamaForCausalLM) -> tuple[tvm.IRModule, list[str], dict[str, Any]]:
    """Export to Relax; returns the module, the packed parameter names and their (shape, dtype)."""
    mod, named_params = model.export_tvm(spec=model.get_default_spec())
    mod = _attach_bounds(mod, model.cfg)
    names = [name for name, _ in named_params]
    layout = {name: (tuple(int(d) for d in p.shape), p.dtype) for name, p in named_params}
    return mod, names, layout


def compile_library(mod: tvm.IRModule, target: tvm.target.Target, out_path: Path, schedule: bool = True) -> None:
    if target.kind.name == "cuda":
        _check_cuda_toolchain()
    ex = tvm.compile(mod, target=target, relax_pipeline=_relax_pipeline(target, schedule))
    from .kernels import floatmm, object_file  # pylint: disable=import-outside-toplevel

    # the C kernels the int8 and float decode matmuls call
    ex.export_library(str(out_path), addons=[object_file(), floatmm.object_file()])


def write_params(params: Iterable[tuple[str, np.ndarray]], params_dir: Path) -> None:
    from tvm.contrib import tvmjs  # pylint: disable=import-outside-toplevel

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress even when asked not to
        tvmjs.dump_tensor_cache(params, str(params_dir), encode_format="raw", show_progress=False)


def check_params(params: Mapping[str, np.ndarray], names: list[str], layout: dict[str, Any], source: str) -> None:
    """Every packed parameter must be present with the shape and dtype the library expects."""
    for name in names:
        if name not in params:
            raise CompileError(f"{source}: tensor {name!r} is missing")
        shape, dtype = layout[name]
        arr = params[name]
        if tuple(arr.shape) != shape or str(arr.dtype) != dtype:
            raise CompileError(
                f"{source}: tensor {name!r} has shape {tuple(arr.shape)} {arr.dtype}, "
                f"expected {shape} {dtype}")


@contextlib.contextmanager
def artifact_lock(out_dir: Path):
    """An exclusive file lock next to ``out_dir``: one process at a time builds or replaces an artifact."""
    import fcntl  # pylint: disable=import-outside-toplevel

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "w", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_artifact(out_dir: Path, *, model: LlamaForCausalLM, params: Mapping[str, np.ndarray],
                   tokenizer_json: str, meta: dict[str, Any], dtype: str, target: str,
                   content_hash: str, source: str, extra: dict[str, Any] | None = None,
                   schedule: bool = True) -> Path:
    """Compile ``model`` and write the artifact directory atomically (a temp dir renamed into place)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    mod, names, layout = export_model(model)
    check_params(params, names, layout, source)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out_dir.parent))
    try:
        compile_library(mod, model.target, tmp / "model.so", schedule)
        write_params(((n, params[n]) for n in names), tmp / "params")
        (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        config = {"format_version": FORMAT_VERSION, **model.cfg.to_dict(), "dtype": dtype, "target": target,
                  "param_names": names, "bos_token_id": meta.get("bos_token_id"),
                  "eos_token_ids": list(meta.get("eos_token_ids") or []),
                  "pad_token_id": meta.get("pad_token_id"), "chat_template": meta.get("chat_template"),
                  "add_bos_token": bool(meta.get("add_bos_token", False)), "content_hash": content_hash,
                  "source": source,
                  "versions": {"spindle": spindle.__version__, "tvm": tvm.__version__,
                               "tvm_ffi": tvm_ffi.__version__, "compiler": compiler_fingerprint(),
                               "target": str(model.target), "page_size": PAGE_SIZE,
                               "schedule": schedule},
                  **(extra or {})}
        (tmp / "spindle-config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
