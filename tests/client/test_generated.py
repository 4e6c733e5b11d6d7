"""The committed Python stubs are what clients/python/generate.py produces from protos/ today."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "clients" / "python" / "generate.py"


def _load_generator():
    spec = importlib.util.spec_from_file_location("spindle_generate_py", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_stubs_are_current():
    gen = _load_generator()
    assert gen.stale_files() == [], "run: python clients/python/generate.py"


def test_check_mode_detects_a_stale_stub(tmp_path, monkeypatch):
    gen = _load_generator()
    fake_out = tmp_path / "v1"
    fake_out.mkdir()
    for name, data in gen.generate().items():
        gen._write(fake_out / name, data)
    monkeypatch.setattr(gen, "OUT_DIR", fake_out)
    assert gen.stale_files() == []
    (fake_out / "engine_pb2.py").write_text((fake_out / "engine_pb2.py").read_text() + "\n# edited\n")
    assert gen.stale_files() == ["engine_pb2.py"]
    assert gen.main(["--check"]) == 1


def test_stubs_import_without_the_server_package():
    code = ("import sys; from spindle_client.v1 import engine_pb2, engine_pb2_grpc; "
            "assert 'spindle' not in sys.modules; print(engine_pb2.DESCRIPTOR.package)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "clients" / "python"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "spindle.v1"
