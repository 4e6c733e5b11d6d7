"""The engine's weights live in one block of 2 MB pages: the engine reports their size and how much of it
the OS backs with huge pages, and the packed weights compute exactly what the loaded ones do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spindle.engine import Engine, EngineConfig

from engine_helpers import greedy

HUGE = 2 << 20


def _file_weight_bytes(model_dir: Path) -> int:
    cache = json.loads((model_dir / "params" / "tensor-cache.json").read_text())
    return sum(rec["nbytes"] for shard in cache["records"] for rec in shard["records"])


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unavailable"
    return text[text.index("[") + 1:text.index("]")]


def test_the_engine_reports_its_weights_and_their_pages(tiny_model_dir):
    limits = Engine(EngineConfig(model=str(tiny_model_dir), mode="server")).limits
    assert limits["weight_bytes"] == _file_weight_bytes(tiny_model_dir)
    assert 0 <= limits["weight_huge_page_bytes"] <= limits["weight_bytes"]
    if _thp_mode() in ("always", "madvise"):
        assert limits["weight_huge_page_bytes"] > 0


def test_spindle_huge_pages_0_leaves_the_weights_as_loaded(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SPINDLE_HUGE_PAGES", "0")
    limits = Engine(EngineConfig(model=str(tiny_model_dir), mode="server")).limits
    assert limits["weight_bytes"] == _file_weight_bytes(tiny_model_dir)
    assert limits["weight_huge_page_bytes"] == 0


@pytest.mark.parametrize("dtype", ["float32", "q4_1"])
def test_packed_weights_generate_what_the_loaded_ones_do(tiny_model_factory, monkeypatch, dtype):
    model = str(tiny_model_factory(dtype))
    results = []
    for huge in ("1", "0"):
        monkeypatch.setenv("SPINDLE_HUGE_PAGES", huge)
        engine = Engine(EngineConfig(model=model, mode="server", max_num_sequence=4))
        for i in range(3):
            engine.add_request(f"r{i}", list(range(3 + i, 14 + 2 * i)), greedy(max_tokens=6, logprobs=True,
                                                                                top_logprobs=3))
        deltas: dict[str, list] = {}
        while not engine.empty():
            for o in engine.step():
                for b in o.branches:
                    deltas.setdefault(o.request_id, []).extend(zip(b.token_ids, b.logprobs or []))
        results.append(deltas)
    assert sorted(results[0]) == ["r0", "r1", "r2"]
    assert all(len(d) == 6 for d in results[0].values())
    assert results[0] == results[1]  # same tokens, logprobs and top logprobs, bit for bit


def test_the_runner_packs_the_weights_in_order_in_one_aligned_block(tiny_model_dir):
    from spindle.compiler.runner import ModelRunner  # pylint: disable=import-outside-toplevel

    runner = ModelRunner(tiny_model_dir)
    arrays = [np.from_dlpack(p) for p in runner.params]
    addresses = [a.__array_interface__["data"][0] for a in arrays]
    assert addresses[0] % HUGE == 0
    for prev, a, addr in zip(addresses, arrays, addresses[1:]):
        assert addr == prev + -(-a.nbytes // 64) * 64
