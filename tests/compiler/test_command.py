"""``spindle compile`` as a subprocess: output layout, content-hash cache, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spindle.compiler.testing import random_params, tiny_config, tiny_tokenizer_json

from .checkpoints import write_hf_folder

ROOT = Path(__file__).resolve().parents[2]


def _spindle_compile(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPINDLE_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "service"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "spindle.compiler.command", "compile", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    cfg = tiny_config()
    return write_hf_folder(tmp_path_factory.mktemp("cmd") / "tiny", cfg, random_params(cfg, seed=3),
                           tiny_tokenizer_json(cfg.vocab_size))


def test_compile_caches_by_content_hash(hf_folder, tmp_path):
    first = _spindle_compile(str(hf_folder), "--dtype", "float32", "-q", "--check", cache=tmp_path)
    assert first.returncode == 0, first.stderr
    out = Path(first.stdout.strip().splitlines()[-1])
    assert out.parent == tmp_path / "models" and out.name.startswith("tiny-float32-llvm-")
    assert "check: Once upon a time" in first.stderr
    cfg = json.loads((out / "spindle-config.json").read_text())
    assert cfg["dtype"] == "float32" and cfg["content_hash"] in out.name
    mtime = (out / "model.so").stat().st_mtime
    t0 = time.time()
    second = _spindle_compile(str(hf_folder), "--dtype", "float32", "-q", cache=tmp_path)
    assert second.returncode == 0 and Path(second.stdout.strip()) == out
    assert (out / "model.so").stat().st_mtime == mtime and time.time() - t0 < 20
    # A changed checkpoint is a different artifact.
    cfg_json = json.loads((hf_folder / "config.json").read_text())
    cfg_json["rms_norm_eps"] = 1e-6
    (hf_folder / "config.json").write_text(json.dumps(cfg_json))
    third = _spindle_compile(str(hf_folder), "--dtype", "float32", "-q", "-o", str(tmp_path / "explicit"), cache=tmp_path)
    assert third.returncode == 0, third.stderr
    assert Path(third.stdout.strip()) == tmp_path / "explicit"
    assert json.loads((tmp_path / "explicit" / "spindle-config.json").read_text())["rms_norm_eps"] == 1e-6


@pytest.mark.parametrize("args,message", [
    (["/nonexistent/model.gguf"], "spindle compile: error: /nonexistent/model.gguf: no such file or directory"),
])
def test_compile_errors(tmp_path, args, message):
    res = _spindle_compile(*args, "-q", cache=tmp_path)
    assert res.returncode == 2 and message in res.stderr
    assert "Traceback" not in res.stderr


def test_compile_limits(hf_folder, tmp_path):
    res = _spindle_compile(str(hf_folder), "--dtype", "float32", "-q", "--max-batch-size", "32",
                           "--prefill-chunk-size", "128", "--context-window-size", "256", cache=tmp_path)
    assert res.returncode == 0, res.stderr
    cfg = json.loads((Path(res.stdout.strip()) / "spindle-config.json").read_text())
    assert (cfg["max_batch_size"], cfg["prefill_chunk_size"], cfg["context_window_size"]) == (32, 128, 256)
    bad = _spindle_compile(str(hf_folder), "--max-batch-size", "0", cache=tmp_path)
    assert bad.returncode == 2 and "max_batch_size: expected a positive integer, got 0" in bad.stderr
    bad = _spindle_compile(str(hf_folder), "--prefill-chunk-size", "1024", "--context-window-size", "256",
                           "--dtype", "float32", "-q", cache=tmp_path)
    assert bad.returncode == 2 and "prefill_chunk_size: 1024 exceeds the context window 256" in bad.stderr


def test_compile_rejects_unknown_dtype(tmp_path):
    res = _spindle_compile("--dtype", "int3", cache=tmp_path)
    assert res.returncode == 2 and "invalid choice: 'int3'" in res.stderr


def test_concurrent_compiles_share_one_artifact(hf_folder, tmp_path):
    env = {**os.environ, "SPINDLE_CACHE_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "service"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "spindle.compiler.command", "compile", str(hf_folder), "--dtype", "q8_0", "-q"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    paths = {Path(o[0].strip()) for o in outs}
    assert len(paths) == 1
    (out,) = paths
    assert json.loads((out / "spindle-config.json").read_text())["dtype"] == "q8_0"
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".tmp-")]
