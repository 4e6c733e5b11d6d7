"""``compile_model``: checkpoint -> cached artifact directory (the Python API behind ``spindle compile``)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from .build import (DTYPES, TARGETS, CompileError, artifact_lock, compiler_fingerprint, make_target,
                    set_runtime_threads, write_artifact)
from .convert import convert_weights, decode_blocks, embedding_format, make_model, matmul_kernel
from .loaders import default_model_path

DEFAULT_DTYPE = "q4_1"


def cache_dir() -> Path:
    """``$SPINDLE_CACHE_DIR`` or ``~/.cache/spindle``."""
    return Path(os.environ.get("SPINDLE_CACHE_DIR") or Path.home() / ".cache" / "spindle")


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def _source_files(source: Path) -> list[Path]:
    if source.is_dir():
        files = [p for p in source.iterdir() if p.is_file() and
                 (p.suffix in (".json", ".safetensors", ".jinja"))]
        if not files:
            raise CompileError(f"{source}: no config.json or *.safetensors files")
        return files
    return [source]


def content_hash(source: Path, dtype: str, target: str, schedule: bool = True, limits: dict | None = None) -> str:
    """Hash of the checkpoint bytes, the format, the target, the limits and the compiler (sources + TVM)."""
    key = json.dumps({"files": _hash_files(_source_files(source)), "dtype": dtype, "target": target,
                      "matmul_kernel": matmul_kernel(dtype, target), "decode_blocks": decode_blocks(dtype, target),
                      "compiler": compiler_fingerprint(), "schedule": schedule,
                      "limits": {k: v for k, v in (limits or {}).items() if v is not None}}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _is_current(out: Path, chash: str) -> bool:
    cfg_path = out / "spindle-config.json"
    if not cfg_path.exists() or not (out / "model.so").exists():
        return False
    try:
        return json.loads(cfg_path.read_text()).get("content_hash") == chash
    except ValueError:
        return False


def compile_model(source: str | os.PathLike | None = None, dtype: str = DEFAULT_DTYPE, target: str = "llvm",
                  output: str | os.PathLike | None = None, *, progress: bool = True, force: bool = False,
                  schedule: bool = True, max_batch_size: int | None = None, prefill_chunk_size: int | None = None,
                  context_window_size: int | None = None) -> Path:
    """Compile ``source`` (GGUF file or Hugging Face folder; None = the embedded SmolLM2) to an artifact.

    Returns the artifact directory: ``output`` if given, else ``<cache_dir()>/models/<name>-<dtype>-<hash>``.
    When that directory already holds an artifact of the same content hash it is returned at once.
    ``schedule=False`` skips the CPU schedule rules (a slow reference build). ``max_batch_size`` (default
    16) and ``prefill_chunk_size`` (default min(context, 2048)) bound the batch and packed-prefill sizes the
    library is memory-planned for; ``context_window_size`` caps the model's context (default: the model's).
    """
    limits = {"max_batch_size": max_batch_size, "prefill_chunk_size": prefill_chunk_size,
              "context_window_size": context_window_size}
    for key, value in limits.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise CompileError(f"{key}: expected a positive integer, got {value!r}")
    if dtype not in DTYPES:
        raise CompileError(f"dtype: unsupported {dtype!r} (supported: {', '.join(DTYPES)})")
    if target not in TARGETS:
        raise CompileError(f"target: unsupported {target!r} (supported: {', '.join(TARGETS)})")
    src = default_model_path() if source is None else Path(source).expanduser().resolve()
    if not src.exists():
        raise CompileError(f"{src}: no such file or directory")
    chash = content_hash(src, dtype, target, schedule, limits)
    name = src.stem if src.is_file() else src.name
    out = Path(output) if output is not None else cache_dir() / "models" / f"{name}-{dtype}-{target}-{chash}"
    if not force and _is_current(out, chash):
        return out
    with artifact_lock(out):  # another process may be compiling the same artifact: wait, then reuse its result
        if not force and _is_current(out, chash):
            return out
        return _compile(src, dtype, target, out, chash, progress, schedule, limits)


def _apply_limits(cfg, limits: dict) -> None:
    if limits.get("context_window_size"):
        cfg.context_window_size = limits["context_window_size"]
        cfg.prefill_chunk_size = min(cfg.prefill_chunk_size, cfg.context_window_size)
    if limits.get("prefill_chunk_size"):
        cfg.prefill_chunk_size = limits["prefill_chunk_size"]
    if limits.get("max_batch_size"):
        cfg.max_batch_size = limits["max_batch_size"]
    if cfg.prefill_chunk_size > cfg.context_window_size:
        raise CompileError(f"prefill_chunk_size: {cfg.prefill_chunk_size} exceeds the context window "
                           f"{cfg.context_window_size}")


def _compile(src: Path, dtype: str, target: str, out: Path, chash: str, progress: bool, schedule: bool,
             limits: dict) -> Path:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    from .loaders import load_checkpoint  # pylint: disable=import-outside-toplevel

    set_runtime_threads()
    steps = tqdm(total=3, desc=f"spindle compile {src.name} ({dtype}, {target})", unit="step", disable=not progress)
    t0 = time.time()
    steps.set_postfix_str("reading checkpoint")
    ckpt = load_checkpoint(src)
    _apply_limits(ckpt.config, limits)
    steps.update(1)
    embed_fmt = embedding_format(dtype, ckpt.weights.get("embed_tokens.weight"))
    head_fmt = embedding_format(dtype, ckpt.weights.get("lm_head.weight"))
    model = make_model(ckpt.config, make_target(target), dtype, embed_fmt=embed_fmt, head_fmt=head_fmt)
    steps.set_postfix_str("converting weights")
    params = dict(convert_weights(ckpt.weights, dtype, embed_fmt, head_fmt, progress=progress, target=target))
    steps.update(1)
    steps.set_postfix_str("compiling library")
    write_artifact(out, model=model, params=params, tokenizer_json=ckpt.tokenizer_json, meta=ckpt.meta,
                   dtype=dtype, target=target, content_hash=chash, source=ckpt.source,
                   extra={"weight_formats": {"linear": dtype, "embedding": embed_fmt,
                                             "lm_head": head_fmt if ckpt.weights.get("lm_head.weight") else None},
                          "matmul_kernel": matmul_kernel(dtype, target),
                          "decode_blocks": decode_blocks(dtype, target)},
                   schedule=schedule)
    steps.update(1)
    steps.set_postfix_str(f"done in {time.time() - t0:.1f}s")
    steps.close()
    return out
