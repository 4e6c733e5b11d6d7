"""Drive a compiled artifact from Python with TVM's own KV cache builtins.

This is how the tests (and ``spindle compile --check``) run a model without the C++ engine: it uses the
same global functions the engine calls (``vm.builtin.tensor_cache.load``,
``vm.builtin.kv_state_add_sequence``, ``kv_state_begin_forward`` ...).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from .build import PAGE_SIZE, activation_dtype, set_runtime_threads


def _f(name: str):
    return tvm.get_global_func(name)


def pack_weights(params):
    """The weights copied into one block of 2 MB pages, as the engine loads them
    (``spindle.engine.pack_weights``); returned as they are where the engine library is not built or
    ``SPINDLE_HUGE_PAGES=0`` (which the library reads)."""
    from .. import _lib  # pylint: disable=import-outside-toplevel

    try:
        packed, _, _ = _lib.get_function("spindle.engine.pack_weights")(params)
    except _lib.EngineLibraryNotFound:
        return params
    return packed


class ModelRunner:
    """Loads ``model.so`` and the weights of an artifact directory; runs prefill and decode."""

    def __init__(self, artifact_dir: str | Path, device: str = "cpu"):
        set_runtime_threads()
        self.path = Path(artifact_dir)
        self.config = json.loads((self.path / "spindle-config.json").read_text())
        if device != "cpu":  # registers the CUDA compile callback that loading a cuda library needs
            importlib.import_module("tvm.support.nvcc")
        self.device = tvm.cpu() if device == "cpu" else tvm.cuda()
        self.act_dtype = activation_dtype(self.config["dtype"])
        lib = tvm.runtime.load_module(str(self.path / "model.so"))
        self.vm = relax.VirtualMachine(lib, self.device)
        _f("vm.builtin.tensor_cache.load")(str(self.path / "params"), self.device.dlpack_device_type(), self.device.index)
        params = _f("vm.builtin.param_array_from_cache_by_name")(self.config["param_names"])
        _f("vm.builtin.tensor_cache.clear")()
        self.params = pack_weights(params) if device == "cpu" else params
        self._embed = self.vm["embed"]
        self._prefill = self.vm["batch_prefill"]
        self._decode = self.vm["batch_decode"]

    def create_kv_cache(self, max_batch_size: int = 4, max_total_seq_len: int | None = None,
                        prefill_chunk_size: int | None = None):
        cfg = self.config
        total = max_total_seq_len or cfg["context_window_size"]
        chunk = prefill_chunk_size or cfg["prefill_chunk_size"]
        s = tvm_ffi.Shape
        return self.vm["create_paged_kv_cache"](s([max_batch_size]), s([total]), s([chunk]), s([PAGE_SIZE]), s([0]))

    def add_sequence(self, kv, seq_id: int) -> None:
        _f("vm.builtin.kv_state_add_sequence")(kv, seq_id)

    def remove_sequence(self, kv, seq_id: int) -> None:
        _f("vm.builtin.kv_state_remove_sequence")(kv, seq_id)

    def embed(self, token_ids: Sequence[int]):
        ids = tvm.runtime.tensor(np.asarray(token_ids, dtype="int32"), self.device)
        return self._embed(ids, self.params)

    def prefill(self, kv, seq_ids: Sequence[int], token_lists: Sequence[Sequence[int]]) -> np.ndarray:
        """Prefill several sequences packed in one call; returns float32 logits ``[len(seq_ids), vocab]``."""
        lengths = [len(t) for t in token_lists]
        flat = [tok for toks in token_lists for tok in toks]
        embeds = self.embed(flat)
        embeds = _f("vm.builtin.reshape")(embeds, tvm_ffi.Shape([1, len(flat), self.config["hidden_size"]]))
        positions = np.cumsum(lengths).astype("int32") - 1
        _f("vm.builtin.kv_state_begin_forward")(kv, tvm_ffi.Shape(list(seq_ids)), tvm_ffi.Shape(lengths))
        logits, _ = self._prefill(embeds, tvm.runtime.tensor(positions, self.device), kv, self.params)
        _f("vm.builtin.kv_state_end_forward")(kv)
        return logits.numpy()[0]

    def decode(self, kv, seq_ids: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
        """One decode step for each sequence; returns float32 logits ``[len(seq_ids), vocab]``."""
        embeds = self.embed(tokens)
        embeds = _f("vm.builtin.reshape")(embeds, tvm_ffi.Shape([len(tokens), 1, self.config["hidden_size"]]))
        _f("vm.builtin.kv_state_begin_forward")(kv, tvm_ffi.Shape(list(seq_ids)), tvm_ffi.Shape([1] * len(tokens)))
        logits, _ = self._decode(embeds, kv, self.params)
        _f("vm.builtin.kv_state_end_forward")(kv)
        return logits.numpy()[:, 0, :]

    def generate_greedy(self, prompt: Sequence[int], max_new_tokens: int, stop_ids: Sequence[int] = ()) -> list[int]:
        kv = self.create_kv_cache(max_batch_size=1)
        self.add_sequence(kv, 0)
        logits = self.prefill(kv, [0], [list(prompt)])
        out: list[int] = []
        for _ in range(max_new_tokens):
            tok = int(np.argmax(logits[0]))
            out.append(tok)
            if tok in stop_ids:
                break
            logits = self.decode(kv, [0], [tok])
        return out
