"""A Llama-shaped Relax nn model for measuring Spindle's CPU kernels, and a runner for compiled libraries.

The model exports the artifact functions of docs/design.md (`embed`, `batch_prefill`, `batch_decode`,
`create_paged_kv_cache`) with the weights as one packed parameter tuple. Its linear layers are
`nn.Linear` for float32/float16 and `spindle.compiler.quantization.QuantizedLinear` for q8_0/q4_1, so the
kernels it produces are those the Spindle compiler's model produces.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import time

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache

from spindle.compiler import quantization as Q
from spindle.compiler.schedules import cpu_pipeline

CACHE_DIR = pathlib.Path(os.environ.get("SPINDLE_BENCH_CACHE", pathlib.Path.home() / ".cache" / "spindle-bench"))


@dataclasses.dataclass(frozen=True)
class LlamaShape:
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_key_value_heads: int = 4
    intermediate_size: int = 2048
    vocab_size: int = 32000
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def _linear(in_features: int, out_features: int, dtype: str) -> nn.Module:
    if dtype in Q.FORMATS:
        return Q.QuantizedLinear(in_features, out_features, dtype)
    # float16 weights accumulate in float32 and cast back.
    return nn.Linear(in_features, out_features, bias=False, dtype=dtype, out_dtype="float32")


def _act(dtype: str) -> str:
    return "float16" if dtype == "float16" else "float32"


class _Block(nn.Module):
    def __init__(self, cfg: LlamaShape, dtype: str, layer_id: int):
        hd = cfg.head_dim
        self.cfg, self.dtype, self.layer_id = cfg, dtype, layer_id
        qkv = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * hd
        self.input_layernorm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=_act(dtype))
        self.qkv_proj = _linear(cfg.hidden_size, qkv, dtype)
        self.o_proj = _linear(cfg.num_attention_heads * hd, cfg.hidden_size, dtype)
        self.post_attention_layernorm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False,
                                                   dtype=_act(dtype))
        self.gate_up_proj = _linear(cfg.hidden_size, 2 * cfg.intermediate_size, dtype)
        self.down_proj = _linear(cfg.intermediate_size, cfg.hidden_size, dtype)

    def _proj(self, layer, x):
        y = layer(x)
        return y.astype(_act(self.dtype)) if y.dtype != _act(self.dtype) else y

    def forward(self, x: nn.Tensor, kv: PagedKVCache):  # pylint: disable=arguments-differ
        cfg, hd = self.cfg, self.cfg.head_dim
        b, s, _ = x.shape
        qkv = self._proj(self.qkv_proj, self.input_layernorm(x))
        qkv = nn.op.reshape(qkv, (b, s, cfg.num_attention_heads + 2 * cfg.num_key_value_heads, hd))
        attn = kv.attention_with_fused_qkv(self.layer_id, qkv, cfg.num_attention_heads, sm_scale=hd**-0.5)
        attn = nn.op.reshape(attn, (b, s, cfg.num_attention_heads * hd))
        x = x + self._proj(self.o_proj, attn)
        gate_up = self._proj(self.gate_up_proj, self.post_attention_layernorm(x))
        gate, up = nn.op.split(gate_up, 2, axis=-1)
        return x + self._proj(self.down_proj, nn.op.silu(gate) * up)


class BenchLlama(nn.Module):  # pylint: disable=too-many-instance-attributes
    def __init__(self, cfg: LlamaShape, dtype: str):
        self.cfg, self.dtype = cfg, dtype
        emb_dtype = "float32" if dtype in Q.FORMATS else dtype
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, dtype=emb_dtype)
        self.layers = nn.ModuleList([_Block(cfg, dtype, i) for i in range(cfg.num_hidden_layers)])
        self.norm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=_act(dtype))
        self.lm_head = _linear(cfg.hidden_size, cfg.vocab_size, dtype)

    def _logits(self, h: nn.Tensor) -> nn.Tensor:
        logits = self.lm_head(self.norm(h))
        return logits.astype("float32") if logits.dtype != "float32" else logits

    def embed(self, input_ids: nn.Tensor):
        return self.embed_tokens(input_ids).astype(_act(self.dtype))

    def _body(self, h: nn.Tensor, kv: PagedKVCache) -> nn.Tensor:
        for layer in self.layers:
            h = layer(h, kv)
        return h

    def batch_prefill(self, input_embeds: nn.Tensor, logit_positions: nn.Tensor, kv: PagedKVCache):
        h = self._body(input_embeds, kv)
        h = nn.op.take(h, logit_positions, axis=1)
        return self._logits(h), kv

    def batch_decode(self, input_embeds: nn.Tensor, kv: PagedKVCache):
        h = self._body(input_embeds, kv)
        return self._logits(h), kv

    def create_paged_kv_cache(self, max_batch_size: tirx.Var, max_total_seq_len: tirx.Var,
                              prefill_chunk_size: tirx.Var, page_size: tirx.Var,
                              support_sliding_window: tirx.Var) -> PagedKVCache:
        cfg = self.cfg
        return TIRPagedKVCache(
            attn_kind="mha", max_batch_size=max_batch_size, max_total_seq_len=max_total_seq_len,
            prefill_chunk_size=prefill_chunk_size, page_size=page_size,
            support_sliding_window=support_sliding_window,
            layer_partition=relax.ShapeExpr([0, cfg.num_hidden_layers]),
            num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads, qk_head_dim=cfg.head_dim, v_head_dim=cfg.head_dim,
            mla_original_qk_head_dim=0, mla_original_v_head_dim=0, rope_mode=RopeMode.NORMAL, rope_scale=1,
            rope_theta=cfg.rope_theta, rope_scaling={}, rope_ext_factors=relax.prim_value(0),
            rotary_dim=cfg.head_dim, enable_disaggregation=False, dtype=_act(self.dtype),
            target=tvm.target.Target.current())

    def get_spec(self) -> dict:
        act, hid = _act(self.dtype), self.cfg.hidden_size
        packed = {"param_mode": "packed", "effect_mode": "none"}
        return {
            "embed": {"input_ids": nn.spec.Tensor(["seq_len"], "int32"), "$": packed},
            "batch_prefill": {"input_embeds": nn.spec.Tensor([1, "seq_len", hid], act),
                              "logit_positions": nn.spec.Tensor(["batch_size"], "int32"),
                              "kv": nn.spec.Object(object_type=PagedKVCache), "$": packed},
            "batch_decode": {"input_embeds": nn.spec.Tensor(["batch_size", 1, hid], act),
                             "kv": nn.spec.Object(object_type=PagedKVCache), "$": packed},
            "create_paged_kv_cache": {"max_batch_size": int, "max_total_seq_len": int, "prefill_chunk_size": int,
                                      "page_size": int, "support_sliding_window": int,
                                      "$": {"param_mode": "none", "effect_mode": "none"}},
        }


def host_target() -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def build(cfg: LlamaShape, dtype: str, schedule: bool = True, cache: bool = True):
    """Compile (or load from the disk cache) the model; returns (library path, ordered param specs)."""
    target = host_target()
    with target:
        model = BenchLlama(cfg, dtype)
        mod, named = model.export_tvm(spec=model.get_spec())
    specs = [(name, tuple(int(d) for d in p.shape), p.dtype) for name, p in named]
    src = pathlib.Path(__file__).parent
    key = hashlib.sha256(json.dumps([dataclasses.asdict(cfg), dtype, schedule, str(target), tvm.__version__,
                                     *[(src.parent / "service/spindle/compiler" / f).read_text()
                                       for f in ("quantization.py",)],
                                     *[p.read_text() for p in sorted((src.parent / "service/spindle/compiler/schedules").glob("*.py"))],
                                     ]).encode()).hexdigest()[:16]
    lib = CACHE_DIR / f"llama-{dtype}-{key}.so"
    if not (cache and lib.exists()):
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        ex = tvm.compile(mod, target, relax_pipeline=cpu_pipeline(target, schedule=schedule))
        tmp = lib.with_suffix(f".{os.getpid()}.so")
        ex.export_library(str(tmp))
        tmp.replace(lib)
    return lib, specs


def random_params(specs, dtype: str, seed: int = 0) -> list:
    """Random weights in the layout the library expects (quantized formats go through `Q.quantize`)."""
    rng = np.random.default_rng(seed)
    out, cache = [], {}
    for name, shape, pdtype in specs:
        prefix, field = name.rsplit(".", 1)
        if dtype in Q.FORMATS and field in ("qweight", "scales", "mins"):
            if prefix not in cache:
                rows, cols = shape[0], shape[1] * (8 if dtype == "q4_1" else 1)
                w = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02)
                cache[prefix] = Q.quantize(dtype, w)
            out.append(cache[prefix][field])
        elif field == "weight" and len(shape) == 1:
            out.append(np.ones(shape, dtype=pdtype))
        else:
            out.append((rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(pdtype))
    return [tvm.runtime.tensor(a) for a in out]


class Runner:
    """Drives a compiled library through the KV-cache builtins, as the engine does."""

    def __init__(self, lib: pathlib.Path, params: list, max_batch: int = 8, max_total: int = 4096,
                 chunk: int = 512):
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
        self.params = params
        get = tvm.get_global_func
        self.add_seq, self.remove_seq = get("vm.builtin.kv_state_add_sequence"), get("vm.builtin.kv_state_remove_sequence")
        self.begin, self.end = get("vm.builtin.kv_state_begin_forward"), get("vm.builtin.kv_state_end_forward")
        self.kv = self.vm["create_paged_kv_cache"](tvm.runtime.ShapeTuple([max_batch]), tvm.runtime.ShapeTuple([max_total]),
                                                   tvm.runtime.ShapeTuple([chunk]), tvm.runtime.ShapeTuple([16]),
                                                   tvm.runtime.ShapeTuple([0]))
        self.embed_f, self.prefill_f, self.decode_f = self.vm["embed"], self.vm["batch_prefill"], self.vm["batch_decode"]

    def prefill(self, seq_ids: list[int], token_lists: list[list[int]]) -> np.ndarray:
        for sid in seq_ids:
            self.add_seq(self.kv, sid)
        ids = np.concatenate([np.asarray(t, np.int32) for t in token_lists])
        lens = [len(t) for t in token_lists]
        emb = self.embed_f(tvm.runtime.tensor(ids), self.params)
        emb = emb._create_view((1, len(ids), emb.shape[-1]))
        self.begin(self.kv, tvm.runtime.ShapeTuple(seq_ids), tvm.runtime.ShapeTuple(lens))
        pos = tvm.runtime.tensor(np.cumsum(lens).astype(np.int32) - 1)
        logits, _ = self.prefill_f(emb, pos, self.kv, self.params)
        self.end(self.kv)
        return logits.numpy()

    def decode(self, seq_ids: list[int], tokens: list[int]) -> np.ndarray:
        emb = self.embed_f(tvm.runtime.tensor(np.asarray(tokens, np.int32)), self.params)
        emb = emb._create_view((len(tokens), 1, emb.shape[-1]))
        self.begin(self.kv, tvm.runtime.ShapeTuple(seq_ids), tvm.runtime.ShapeTuple([1] * len(seq_ids)))
        logits, _ = self.decode_f(emb, self.kv, self.params)
        self.end(self.kv)
        return logits.numpy()

    def remove(self, seq_ids: list[int]) -> None:
        for sid in seq_ids:
            self.remove_seq(self.kv, sid)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
