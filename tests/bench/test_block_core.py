"""bench/block_core.c builds against the working tree's kernels and times one core's half of a step."""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

import block_core  # noqa: E402
from compile_step import source_tree  # noqa: E402


def test_the_harness_runs_one_half_of_a_smollm2_shaped_step(tmp_path):
    binary = block_core.build(source_tree(None), tmp_path, "current")
    r = block_core.run(binary, 2)
    assert r["blocks"] > 0 and r["plain"] > 0
    # half of 30 layers of q4_1 (QKV 576x960, o 576x576, gate_up 576x3072, down 1536x576) and a q8_0 head
    layer = (960 + 576 + 3072) * 576 // 32 * 20 + 576 * 1536 // 32 * 20
    head = 49152 // 16 * (576 // 32 // 2) * 1088
    assert r["bytes"] == (30 * layer + head) // 2
