"""The contract itself: buf lint, buf breaking against the proto's history, and current generated stubs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import ROOT, run, tail

PROTO = "protos/spindle/v1/engine.proto"


def proto_history() -> list[str]:
    """Commits (newest first) that changed protos/, as far as this clone's history reaches."""
    proc = run(["git", "log", "--format=%H", "--", "protos"])
    assert proc.returncode == 0, tail(proc)
    return proc.stdout.split()


def test_buf_lint_is_clean(polyglot_tools):
    proc = run(["buf", "lint"], env=polyglot_tools)
    assert proc.returncode == 0, tail(proc)


def test_no_breaking_change_against_any_committed_version(polyglot_tools):
    # A shallow clone may reach no commit that touched protos/: then the committed HEAD is the baseline.
    commits = proto_history() or ["HEAD"]
    for commit in commits:
        proc = run(["buf", "breaking", "--against", f".git#ref={commit},subdir=protos"], env=polyglot_tools)
        assert proc.returncode == 0, f"breaking change against {commit}:\n" + tail(proc)


@pytest.mark.parametrize("edit", [
    ("  string role = 1;", "  string role = 7;"),                    # renumbered field
    ("  FINISH_REASON_ERROR = 4;\n", ""),                            # removed enum value
    ("  optional float temperature = 2;", "  optional double temperature = 2;"),  # changed type
])
def test_buf_breaking_catches_a_break(polyglot_tools, tmp_path, edit):
    """The breaking check fails on a real incompatible edit (run on a scratch copy of the tree)."""
    copy = tmp_path / "tree"
    copy.mkdir()
    shutil.copy(ROOT / "buf.yaml", copy / "buf.yaml")
    shutil.copytree(ROOT / "protos", copy / "protos")
    text = (copy / PROTO).read_text()
    old, new = edit
    assert old in text
    (copy / PROTO).write_text(text.replace(old, new, 1))
    proc = run(["buf", "breaking", "--against", str(ROOT / "protos")], cwd=copy, env=polyglot_tools)
    assert proc.returncode != 0, "buf breaking accepted an incompatible change:\n" + tail(proc)


def test_generated_stubs_are_current(polyglot_tools):
    proc = run(["scripts/generate-stubs.sh", "--check"], env=polyglot_tools)
    assert proc.returncode == 0, tail(proc)


def scratch_tree(dest: Path) -> Path:
    """A copy of what scripts/generate-stubs.sh reads and checks, so a test can edit it freely."""
    for name in ("buf.yaml", "buf.gen.yaml"):
        shutil.copy(ROOT / name, dest / name)
    for d in ("protos", "scripts", "clients/go/spindlev1", "clients/java/src/main/java/dev/spindle/v1",
              "clients/typescript/src/gen", "clients/typescript/proto", "clients/python"):
        shutil.copytree(ROOT / d, dest / d, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / ".cache").mkdir()
    (dest / ".cache/bin").symlink_to(ROOT / ".cache/bin")
    return dest


@pytest.mark.parametrize("stale", [
    "clients/go/spindlev1/engine.pb.go",
    "clients/java/src/main/java/dev/spindle/v1/EngineServiceGrpc.java",
    "clients/typescript/src/gen/spindle/v1/engine.ts",
])
def test_stub_check_notices_a_stale_file(polyglot_tools, tmp_path, stale):
    """--check fails when a committed stub differs from what the generator writes (on a scratch copy)."""
    tree = scratch_tree(tmp_path)
    assert run(["scripts/generate-stubs.sh", "--check"], cwd=tree, env=polyglot_tools).returncode == 0
    with open(tree / stale, "a", encoding="utf-8") as f:
        f.write("\n// edited by hand\n")
    proc = run(["scripts/generate-stubs.sh", "--check"], cwd=tree, env=polyglot_tools)
    assert proc.returncode != 0 and str(Path(stale).parent) in proc.stdout, tail(proc)
