"""Spindle's CPU attention kernels and the paged KV cache that uses them.

TVM's ``TIRPagedKVCache`` ships CPU kernels that run one scalar loop nest on one thread. The kernels here
compute the same functions (same signatures, same outputs: the attention output and its base-2
log-sum-exp, which the cache's merge kernel combines across the ragged and paged parts), laid out for a
multi-core SIMD CPU:

- **ragged prefill** (the new tokens of a prefill attending to each other) and **paged prefill** (new
  tokens attending to a cached prefix): parallel over query heads; per head and sequence the keys are
  transposed once into a ``[head_dim, keys]`` panel so a query row's scores are computed 4 x 16 keys at
  a time with broadcast-FMA (four independent accumulator chains, no horizontal sums); the softmax is
  exact (two passes over the row's scores); ``P @ V`` accumulates the output row in vector registers
  along ``head_dim``;
- **paged decode**, the **RoPE split** and the **k/v append** of a decode step: see
  ``schedules/decode_kernels.py`` (per (sequence, KV head) tasks with an online softmax, serial when the
  work is small); ``split_rotary`` below is the RoPE split for ``llama3``/``yarn`` scaling: parallel over
  tokens, a position's cos/sin computed once per dimension for all heads.

Scores are scaled by ``sm_scale * log2(e)`` and exponentiated with ``exp2``, as the cache's merge kernel
expects. A query that sees no key (possible only in the paged parts) gets a zero output and a log-sum-exp
of -5e4, so merging ignores it.

``sliding_window`` (Mistral): with ``W > 0`` a query at absolute position ``p`` attends only to keys at
positions ``p - W < pos <= p``. Positions come from the cache's RoPE position arrays (``q_rope_position``
and ``k_rope_pos_offset``), so the window holds for chunked prefill and prefix-sharing forks alike. The
cache keeps every page of a sequence (memory is not reclaimed beyond the window).

The kernels expect RoPE to be applied before the cache append (``RopeMode.NORMAL``, what the model
uses); the cache is created so that it never asks them for inline RoPE.
"""

from __future__ import annotations

import math
from typing import Any

from tvm import relax as rx
from tvm import tirx
from tvm.ir import StringImm
from tvm.relax.frontend.nn.llm import kv_cache as tvm_kv
from tvm.relax.frontend.nn.llm.kv_cache import AttnKind, PagedKVCache, RopeMode
from tvm.relax.frontend.nn.llm.position_embedding import switch_rope_freq_func
from tvm.script import tirx as T
from tvm.target import Target

from .schedules.decode_kernels import paged_decode, split_rotary_default, transpose_append

LOG2E = math.log2(math.e)
KEY_TILE = 16  # keys per score vector (one 512-bit register of float32)
CHAINS = 4  # key tiles scored side by side: independent FMA chains hide the FMA latency
NO_KEYS_LSE = -5e4  # log-sum-exp of a query that sees no key (the bundled kernels' convention)


def _lanes(head_dim: int) -> int:
    for lanes in (16, 8, 4, 2):
        if head_dim % lanes == 0:
            return lanes
    return 1


def ragged_prefill(h_kv: int, h_q: int, d: int, dtype: str, sliding_window: int = 0):
    """`batch_prefill_ragged_kv(q, q_indptr, k, v, kv_indptr, q_rope_position, k_rope_pos_offset, output,
    lse, causal, rotary_mode, rope_scale, rope_theta, sm_scale)`: attention among the new tokens."""
    group = h_q // h_kv
    lanes = _lanes(d)
    window = int(sliding_window)

    # pylint: disable=too-many-locals,too-many-statements,unused-argument
    @T.prim_func(s_tir=True)
    def batch_prefill_ragged_kv(var_q: T.handle, var_q_indptr: T.handle, var_k: T.handle, var_v: T.handle,
                                var_kv_indptr: T.handle, var_q_rope_position: T.handle,
                                var_k_rope_pos_offset: T.handle, var_output: T.handle, var_lse: T.handle,
                                causal: T.int32, rotary_mode: T.int32, rope_scale: T.float32,
                                rope_theta: T.float32, sm_scale: T.float32):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch_size = T.int32()
        qo_len = T.int32()
        kv_len = T.int32()
        q_indptr_off = T.int32()
        kv_indptr_off = T.int32()
        q_pos_off = T.int32()
        k_pos_off = T.int32()
        q = T.match_buffer(var_q, (qo_len, h_q, d), dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch_size + 1,), "int32", elem_offset=q_indptr_off)
        k = T.match_buffer(var_k, (kv_len, h_kv, d), dtype)
        v = T.match_buffer(var_v, (kv_len, h_kv, d), dtype)
        kv_indptr = T.match_buffer(var_kv_indptr, (batch_size + 1,), "int32", elem_offset=kv_indptr_off)
        q_rope_position = T.match_buffer(var_q_rope_position, (qo_len,), "int32", elem_offset=q_pos_off)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=k_pos_off)
        output = T.match_buffer(var_output, (qo_len, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (qo_len, h_q), "float32")

        T.Assert(rotary_mode == 0, "Spindle's CPU attention expects RoPE applied before the cache append")
        for h in T.parallel(h_q):
            with T.sblock("attn"):
                T.reads()
                T.writes()
                kt = T.sblock_alloc_buffer((d, kv_len + KEY_TILE), "float32")
                scores = T.sblock_alloc_buffer((kv_len + KEY_TILE,), "float32")
                qv = T.sblock_alloc_buffer((d,), "float32")
                acc = T.sblock_alloc_buffer((CHAINS * KEY_TILE,), "float32")
                o = T.sblock_alloc_buffer((d,), "float32")
                stat = T.sblock_alloc_buffer((2,), "float32")
                for b in T.serial(batch_size):
                    kv0: T.let[T.int32] = kv_indptr[b]
                    nkv: T.let[T.int32] = kv_indptr[b + 1] - kv_indptr[b]
                    q0: T.let[T.int32] = q_indptr[b]
                    nq: T.let[T.int32] = q_indptr[b + 1] - q_indptr[b]
                    for j in T.serial(nkv):
                        for c in T.serial(d):
                            kt[c, j] = T.Cast("float32", k[kv0 + j, h // group, c])
                    for i in T.serial(nq):
                        for c in T.serial(d):
                            qv[c] = T.Cast("float32", q[q0 + i, h, c]) * sm_scale * T.float32(LOG2E)
                        hi: T.let[T.int32] = T.if_then_else(causal > 0, T.min(nkv - nq + i + 1, nkv), nkv)
                        lo: T.let[T.int32] = T.if_then_else(
                            window > 0,
                            T.max(q_rope_position[q0 + i] - window + 1 - k_rope_pos_offset[b], 0), 0)
                        n: T.let[T.int32] = T.max(hi - lo, 0)
                        for t in T.serial(n // (CHAINS * KEY_TILE)):
                            for a in T.unroll(CHAINS):
                                for l in T.vectorized(KEY_TILE):
                                    acc[a * KEY_TILE + l] = T.float32(0)
                            for c in T.serial(d):
                                for a in T.unroll(CHAINS):
                                    for l in T.vectorized(KEY_TILE):
                                        acc[a * KEY_TILE + l] = acc[a * KEY_TILE + l] + qv[c] * kt[
                                            c, lo + (t * CHAINS + a) * KEY_TILE + l]
                            for a in T.unroll(CHAINS):
                                for l in T.vectorized(KEY_TILE):
                                    scores[(t * CHAINS + a) * KEY_TILE + l] = acc[a * KEY_TILE + l]
                        for t in T.serial(n // (CHAINS * KEY_TILE) * CHAINS, (n + KEY_TILE - 1) // KEY_TILE):
                            for l in T.vectorized(KEY_TILE):
                                acc[l] = T.float32(0)
                            for c in T.serial(d):
                                for l in T.vectorized(KEY_TILE):
                                    acc[l] = acc[l] + qv[c] * kt[c, lo + t * KEY_TILE + l]
                            for l in T.vectorized(KEY_TILE):
                                scores[t * KEY_TILE + l] = acc[l]
                        stat[0] = T.float32(NO_KEYS_LSE)
                        for j in T.serial(n):
                            stat[0] = T.max(stat[0], scores[j])
                        stat[1] = T.float32(0)
                        for j in T.serial(n):
                            scores[j] = T.exp2(scores[j] - stat[0])
                            stat[1] = stat[1] + scores[j]
                        for c in T.vectorized(d):
                            o[c] = T.float32(0)
                        for j in T.serial(n):
                            for c0 in T.unroll(d // lanes):
                                for l in T.vectorized(lanes):
                                    o[c0 * lanes + l] = o[c0 * lanes + l] + scores[j] * T.Cast(
                                        "float32", v[kv0 + lo + j, h // group, c0 * lanes + l])
                        for c in T.vectorized(d):
                            output[q0 + i, h, c] = T.Cast(dtype, T.if_then_else(
                                stat[1] > T.float32(0), o[c] / stat[1], T.float32(0)))
                        lse[q0 + i, h] = T.if_then_else(stat[1] > T.float32(0), stat[0] + T.log2(stat[1]),
                                                        T.float32(NO_KEYS_LSE))

    return batch_prefill_ragged_kv


def paged_prefill(h_kv: int, h_q: int, d: int, dtype: str, sliding_window: int = 0, page_size: int = 16):
    """`batch_prefill_paged_kv_cpu(q, q_indptr, pages, page_indptr, page_values, length_info,
    k_rope_pos_offset, q_rope_position, output, lse, causal, rotary_mode, rope_scale, rope_theta,
    sm_scale)`: new tokens attending to the cached pages of their sequence."""
    group = h_q // h_kv
    lanes = _lanes(d)
    window = int(sliding_window)

    # pylint: disable=too-many-locals,too-many-statements,unused-argument
    @T.prim_func(s_tir=True)
    def batch_prefill_paged_kv_cpu(var_q: T.handle, var_q_indptr: T.handle, var_pages: T.handle,
                                   var_page_indptr: T.handle, var_page_values: T.handle,
                                   var_length_info: T.handle, var_k_rope_pos_offset: T.handle,
                                   var_q_rope_position: T.handle, var_output: T.handle, var_lse: T.handle,
                                   causal: T.int32, rotary_mode: T.int32, rope_scale: T.float32,
                                   rope_theta: T.float32, sm_scale: T.float32):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch_size = T.int32()
        total_len = T.int32()
        nnz_pages = T.int32()
        max_num_pages = T.int32()
        q_indptr_off = T.int32()
        page_indptr_off = T.int32()
        page_values_off = T.int32()
        k_pos_off = T.int32()
        q_pos_off = T.int32()
        length_info_off = T.int32()
        q = T.match_buffer(var_q, (total_len, h_q, d), dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch_size + 1,), "int32", elem_offset=q_indptr_off)
        pages = T.match_buffer(var_pages, (max_num_pages, 2, h_kv, page_size, d), dtype)
        page_indptr = T.match_buffer(var_page_indptr, (batch_size + 1,), "int32", elem_offset=page_indptr_off)
        page_values = T.match_buffer(var_page_values, (nnz_pages,), "int32", elem_offset=page_values_off)
        last_page_len = T.match_buffer(var_length_info, (batch_size,), "int32", elem_offset=length_info_off)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=k_pos_off)
        q_rope_position = T.match_buffer(var_q_rope_position, (total_len,), "int32", elem_offset=q_pos_off)
        output = T.match_buffer(var_output, (total_len, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (total_len, h_q), "float32")

        T.Assert(rotary_mode == 0, "Spindle's CPU attention expects RoPE applied before the cache append")
        for h in T.parallel(h_q):
            with T.sblock("attn"):
                T.reads()
                T.writes()
                kt = T.sblock_alloc_buffer((d, nnz_pages * page_size + KEY_TILE), "float32")
                scores = T.sblock_alloc_buffer((nnz_pages * page_size + KEY_TILE,), "float32")
                qv = T.sblock_alloc_buffer((d,), "float32")
                acc = T.sblock_alloc_buffer((CHAINS * KEY_TILE,), "float32")
                o = T.sblock_alloc_buffer((d,), "float32")
                stat = T.sblock_alloc_buffer((2,), "float32")
                for b in T.serial(batch_size):
                    p0: T.let[T.int32] = page_indptr[b]
                    npages: T.let[T.int32] = page_indptr[b + 1] - page_indptr[b]
                    nkv: T.let[T.int32] = T.if_then_else(npages > 0, (npages - 1) * page_size + last_page_len[b], 0)
                    q0: T.let[T.int32] = q_indptr[b]
                    nq: T.let[T.int32] = q_indptr[b + 1] - q_indptr[b]
                    for j in T.serial(nkv):
                        for c in T.serial(d):
                            kt[c, j] = T.Cast("float32", pages[page_values[p0 + j // page_size], 0, h // group,
                                                               j % page_size, c])
                    for i in T.serial(nq):
                        for c in T.serial(d):
                            qv[c] = T.Cast("float32", q[q0 + i, h, c]) * sm_scale * T.float32(LOG2E)
                        hi: T.let[T.int32] = T.if_then_else(causal > 0, T.max(T.min(nkv - nq + i + 1, nkv), 0), nkv)
                        lo: T.let[T.int32] = T.if_then_else(
                            window > 0,
                            T.max(q_rope_position[q0 + i] - window + 1 - k_rope_pos_offset[b], 0), 0)
                        n: T.let[T.int32] = T.max(hi - lo, 0)
                        for t in T.serial(n // (CHAINS * KEY_TILE)):
                            for a in T.unroll(CHAINS):
                                for l in T.vectorized(KEY_TILE):
                                    acc[a * KEY_TILE + l] = T.float32(0)
                            for c in T.serial(d):
                                for a in T.unroll(CHAINS):
                                    for l in T.vectorized(KEY_TILE):
                                        acc[a * KEY_TILE + l] = acc[a * KEY_TILE + l] + qv[c] * kt[
                                            c, lo + (t * CHAINS + a) * KEY_TILE + l]
                            for a in T.unroll(CHAINS):
                                for l in T.vectorized(KEY_TILE):
                                    scores[(t * CHAINS + a) * KEY_TILE + l] = acc[a * KEY_TILE + l]
                        for t in T.serial(n // (CHAINS * KEY_TILE) * CHAINS, (n + KEY_TILE - 1) // KEY_TILE):
                            for l in T.vectorized(KEY_TILE):
                                acc[l] = T.float32(0)
                            for c in T.serial(d):
                                for l in T.vectorized(KEY_TILE):
                                    acc[l] = acc[l] + qv[c] * kt[c, lo + t * KEY_TILE + l]
                            for l in T.vectorized(KEY_TILE):
                                scores[t * KEY_TILE + l] = acc[l]
                        stat[0] = T.float32(NO_KEYS_LSE)
                        for j in T.serial(n):
                            stat[0] = T.max(stat[0], scores[j])
                        stat[1] = T.float32(0)
                        for j in T.serial(n):
                            scores[j] = T.exp2(scores[j] - stat[0])
                            stat[1] = stat[1] + scores[j]
                        for c in T.vectorized(d):
                            o[c] = T.float32(0)
                        for j in T.serial(n):
                            for c0 in T.unroll(d // lanes):
                                for l in T.vectorized(lanes):
                                    o[c0 * lanes + l] = o[c0 * lanes + l] + scores[j] * T.Cast(
                                        "float32", pages[page_values[p0 + (lo + j) // page_size], 1, h // group,
                                                         (lo + j) % page_size, c0 * lanes + l])
                        for c in T.vectorized(d):
                            output[q0 + i, h, c] = T.Cast(dtype, T.if_then_else(
                                stat[1] > T.float32(0), o[c] / stat[1], T.float32(0)))
                        lse[q0 + i, h] = T.if_then_else(stat[1] > T.float32(0), stat[0] + T.log2(stat[1]),
                                                        T.float32(NO_KEYS_LSE))

    return batch_prefill_paged_kv_cpu


def split_rotary(theta: float, scale: float, d: int, h_q: int, h_kv: int, dtype: str,
                 rope_scaling: dict[str, Any]):
    """`tir_split_rotary(qkv, position_map, q, k, v, apply_rope)`: splits the fused projection into q, k
    and v and applies RoPE (rotate-half, the model's frequencies and scaling) to q and k. Parallel over
    tokens; the cos/sin of a token's position are computed once per dimension and shared by all its
    heads (the bundled kernel evaluates them for every head and dimension)."""
    fused = h_q + 2 * h_kv
    half = d // 2
    lanes = _lanes(d)
    freq = switch_rope_freq_func(rope_scaling)

    def table(pos, dim, part: int):
        # A fresh call per use: each let-binding gets its own variables.
        cos_f, sin_f, bindings = freq(pos * tirx.const(scale, "float32"), dim, d, theta, "float32")
        expr = cos_f if part == 0 else sin_f
        for var, value in bindings.items():
            expr = tirx.Let(var, value, expr)
        return expr

    # pylint: disable=too-many-locals
    @T.prim_func(s_tir=True)
    def split_rotary_cpu(var_qkv: T.handle, var_position_map: T.handle, var_q: T.handle, var_k: T.handle,
                         var_v: T.handle, apply_rope: T.int64):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        seq_len = T.int32()
        pos_off = T.int32()
        qkv = T.match_buffer(var_qkv, (seq_len, fused, d), dtype)
        q = T.match_buffer(var_q, (seq_len, h_q, d), dtype)
        k = T.match_buffer(var_k, (seq_len, h_kv, d), dtype)
        v = T.match_buffer(var_v, (seq_len, h_kv, d), dtype)
        position_map = T.match_buffer(var_position_map, (seq_len,), "int32", elem_offset=pos_off)
        for s in T.parallel(seq_len):
            with T.sblock("rope"):
                T.reads()
                T.writes()
                cs = T.sblock_alloc_buffer((d,), "float32")
                sn = T.sblock_alloc_buffer((d,), "float32")
                for j in T.serial(d):
                    cs[j] = T.if_then_else(apply_rope > 0, table(position_map[s], j, 0), T.float32(1))
                    sn[j] = T.if_then_else(apply_rope > 0, table(position_map[s], j, 1), T.float32(0))
                for h in T.serial(h_q + h_kv):
                    for j0 in T.serial(d // lanes):
                        for l in T.vectorized(lanes):
                            if h < h_q:
                                q[s, h, j0 * lanes + l] = T.Cast(dtype, cs[j0 * lanes + l] * T.Cast(
                                    "float32", qkv[s, h, j0 * lanes + l]) + sn[j0 * lanes + l] * T.if_then_else(
                                    j0 * lanes + l < half, -T.Cast("float32", qkv[s, h, j0 * lanes + l + half]),
                                    T.Cast("float32", qkv[s, h, j0 * lanes + l - half])))
                            else:
                                k[s, h - h_q, j0 * lanes + l] = T.Cast(dtype, cs[j0 * lanes + l] * T.Cast(
                                    "float32", qkv[s, h, j0 * lanes + l]) + sn[j0 * lanes + l] * T.if_then_else(
                                    j0 * lanes + l < half, -T.Cast("float32", qkv[s, h, j0 * lanes + l + half]),
                                    T.Cast("float32", qkv[s, h, j0 * lanes + l - half])))
                for h in T.serial(h_kv):
                    for j in T.vectorized(d):
                        v[s, h, j] = qkv[s, h_q + h_kv + h, j]

    return split_rotary_cpu


def rope_split(theta: float, scale: float, d: int, h_q: int, h_kv: int, dtype: str, rope_scaling: dict[str, Any]):
    """The cache's `tir_split_rotary` for the model's RoPE: the float64 fast path without frequency scaling,
    `split_rotary` for llama3/yarn, TVM's kernel for longrope (which needs its factor table)."""
    if not rope_scaling or rope_scaling.get("rope_type") in (None, "default"):
        return split_rotary_default(theta, scale, d, h_q, h_kv, dtype)
    if rope_scaling.get("rope_type") == "longrope":
        return tvm_kv.llama_rope_with_position_map(theta, scale, d, h_q, h_kv, dtype, rope_scaling, d)
    return split_rotary(theta, scale, d, h_q, h_kv, dtype, rope_scaling)


class CPUPagedKVCache(PagedKVCache):  # pylint: disable=too-few-public-methods
    """``TIRPagedKVCache`` for the CPU with Spindle's attention kernels in place of the bundled ones.

    Builds the same ``vm.builtin.paged_attention_kv_cache_create`` call as TVM's class for an ``llvm``
    target (same argument order, same auxiliary kernels), with the ragged prefill, paged prefill and
    paged decode kernels replaced. ``sliding_window > 0`` masks attention to that many positions; the
    cache itself is created without TVM's sliding-window mode (which would switch RoPE to inline)."""

    def __init__(self, *, max_batch_size: tirx.Var, max_total_seq_len: tirx.Var,  # pylint: disable=too-many-locals
                 prefill_chunk_size: tirx.Var, page_size: tirx.Var, num_hidden_layers: int,
                 num_attention_heads: int, num_key_value_heads: int, head_dim: int, rope_theta: float,
                 rope_scale: float, rope_scaling: dict[str, Any], dtype: str, target: Target,
                 sliding_window: int = 0, name: str = "paged_kv_cache") -> None:
        if target.kind.name != "llvm":
            raise ValueError(f"target: CPUPagedKVCache builds CPU kernels, not {target.kind.name}")
        h_kv, h_q, d = num_key_value_heads, num_attention_heads, head_dim
        rope_scaling = tvm_kv._prepare_yarn_rope_scaling(rope_scaling, rope_theta)  # pylint: disable=protected-access
        bb = rx.BlockBuilder.current()

        def tir(func, fname):
            return rx.Tuple([StringImm("tirx"), bb.add_func(func, fname)])

        args = [
            rx.ShapeExpr([max_batch_size, max_total_seq_len, prefill_chunk_size, page_size, 0, 1024]),
            rx.ShapeExpr([0, num_hidden_layers]),
            rx.prim_value(h_q), rx.prim_value(h_kv), rx.prim_value(d), rx.prim_value(d),
            rx.ShapeExpr([int(AttnKind.MHA)] * num_hidden_layers),
            rx.prim_value(False),
            rx.prim_value(RopeMode.NORMAL),
            rx.prim_value(rope_scale),
            rx.prim_value(rope_theta),
            rx.prim_value(0),  # no RoPE extension factors
            rx.op.zeros((), dtype),
            bb.add_func(transpose_append(h_kv, d, dtype), "kv_cache_transpose_append"),
            bb.add_func(tvm_kv._kv_cache_transpose_append_mla(d, dtype), "kv_cache_transpose_append_mla"),  # pylint: disable=protected-access
            tir(ragged_prefill(h_kv, h_q, d, dtype, sliding_window), "spindle_attention_prefill_ragged"),
            tir(paged_prefill(h_kv, h_q, d, dtype, sliding_window), "spindle_attention_prefill_paged"),
            tir(paged_decode(h_kv, h_q, d, dtype, sliding_window), "spindle_attention_decode_paged"),
            # TVM's sliding-window mode and tree attention (speculative decoding) keep the bundled kernels;
            # the cache never enters that mode and Spindle's engine builds no token trees.
            tir(tvm_kv._attention_prefill_cpu(h_kv, h_q, d, dtype, True, rope_scaling),  # pylint: disable=protected-access
                "tir_attention_prefill_cpu_sliding_window"),
            tir(tvm_kv._attention_decode_cpu(h_kv, h_q, d, dtype, True, rope_scaling),  # pylint: disable=protected-access
                "tir_attention_decode_cpu_sliding_window"),
            tir(tvm_kv.tree_attn_cpu(h_kv, h_q, d, dtype, rope_scaling), "tir_attention_prefill_with_tree_mask_cpu"),
            tir(tvm_kv.tree_attn_with_paged_kv_cache_cpu(h_kv, h_q, d, dtype, rope_scaling),
                "tir_attention_prefill_with_tree_mask_with_paged_kv_cache_cpu"),
            rx.Tuple([]),  # no MLA prefill
            rx.Tuple([bb.add_func(tvm_kv._merge_state_inplace_cpu(dtype), "tir_attention_merge_state_cpu")]),  # pylint: disable=protected-access
            bb.add_func(rope_split(rope_theta, rope_scale, d, h_q, h_kv, dtype, rope_scaling), "tir_split_rotary"),
            bb.add_func(tvm_kv._copy_single_page_cpu(h_kv, page_size, d, dtype), "kv_cache_copy_single_page_cpu"),  # pylint: disable=protected-access
            bb.add_func(tvm_kv._kv_cache_debug_get_kv(num_hidden_layers, h_kv, d, dtype), "kv_cache_debug_get_kv"),  # pylint: disable=protected-access
            bb.add_func(tvm_kv._compact_kv_copy_cpu(h_kv, d, dtype), "kv_cache_compact_kv_copy_cpu"),  # pylint: disable=protected-access
        ]
        super().__init__(
            _expr=rx.call_pure_packed("vm.builtin.paged_attention_kv_cache_create", *args, ty_args=rx.AnyType()),
            _name=name)
