"""The paged KV cache's per-layer kernels of a decode step, for the CPU: paged decode attention, the q/k/v
split with RoPE, and the k/v append into the pages.

A decode step calls each of them once per layer with very little work (one token per sequence), so what
matters is the fixed cost of a call as much as the arithmetic:

- **no parallel launch for small work**: each kernel has a serial and a parallel copy of its loop nest
  and picks one at run time from the amount of work (waking TVM's worker threads costs a few
  microseconds, more than a batch-1 layer's attention over a short context);
- **paged decode attention**: one task per (sequence, KV head) scores all the query heads of that KV
  head's group, so each cached key and value is read once per group; keys are taken in blocks of
  ``BLOCK`` with an online softmax (running max and sum, the output rescaled when the max grows), so the
  kernel needs no buffer sized by the context; a score is a vectorised dot product along ``head_dim``
  finished by a halving tree of vector adds; ``exp2`` is a vectorised polynomial (``fast_exp2``) instead
  of a libm call per score; a task asks for the cache lines of its keys and values ``PREFETCH_AHEAD``
  keys before it scores them (``llvm.prefetch`` into L2), and its last keys ask for the first ones of the
  next task (a thread runs consecutive tasks): they come from memory in page-sized runs, which the
  hardware prefetcher would ramp up on one at a time;
- **RoPE split**: the cos/sin of a position are computed once per frequency (``head_dim / 2`` of them, for
  all heads), the frequencies once per call; models with ``llama3``/``yarn``/``longrope`` scaling keep the
  generic frequency functions;
- **append**: a plain vectorised copy into the page slots.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import DataType, tirx
from tvm.script import tirx as T

LOG2E = math.log2(math.e)
NO_KEYS_LSE = -5e4  # log-sum-exp of a query that sees no key (the bundled kernels' convention)
BLOCK = 128  # keys per online-softmax block of the decode attention
EXP_TILE = 16  # lanes of the vectorised softmax loops
# Below this many (query head x cached key) pairs in a call (counted in whole pages) the decode attention
# runs on the calling thread: no parallel launch, and no task's output written on the other core for the
# next block to read back. SmolLM2 at batch 1 runs serially up to 7 pages (112 keys). Side by side with 256
# (bench/decode_ab.py --in-process): batch 1 at 32 cached tokens q4_1 1.035x, 1.002x and 1.027x, q8_0
# 1.034x, 1.002x and 1.008x (three runs of 40-80 rounds), at 100 tokens 1.016x / 1.020x, at 64 tokens
# 1.004x (batch 2 1.008x), batch 8 unchanged (1.002x; all-serial decode there: 0.864x); 2048 pairs: 0.996x
# at 150 tokens.
DECODE_PARALLEL_MIN = 1024
SPLIT_KEYS = 256  # a long context is cut into ranges of this many keys (up to MAX_SPLIT)
MAX_SPLIT = 8  # key ranges per (sequence, KV head) at most
# Fewer (sequence, KV head) pairs than this are cut into key ranges (of MIN_PART_KEYS at least) until there
# are this many tasks: SmolLM2 at batch 1 has 3 KV heads, which two threads share 2 + 1 (the attention reads
# the cached keys and values from memory, so the thread with two heads' keys sets the time); 6 tasks share
# 3 + 3 (3% of a batch-1 step at 100 cached tokens, 6% at 160).
MIN_TASKS = 6
MIN_PART_KEYS = 32
# Keys a decode task prefetches ahead of the one it scores (their key and value lines: 16 KB at SmolLM2's
# head_dim 64 in float32). Asking for a whole range's lines at once (250 keys, ~2000 lines, at a 500-key
# context) overran what a core keeps in flight and left later keys cold: 1.12-1.16x slower steps at
# contexts 500-1000 (batch 1), 1.21x at batch 8 x 500 keys; 16-128 keys ahead measured alike. Carrying
# the prefetch on into the next task's range (each task started cold before): 1.08-1.12x at batch 1.
PREFETCH_AHEAD = 32
ROPE_PARALLEL_MIN = 32  # tokens: below this the RoPE split runs on the calling thread
APPEND_PARALLEL_MIN = 256  # tokens: below this the append runs on the calling thread


def lanes_of(head_dim: int) -> int:
    for lanes in (16, 8, 4, 2):
        if head_dim % lanes == 0:
            return lanes
    return 1


# -- vectorisable elementary functions ---------------------------------------------------------------------
def _exp2_coefficients() -> list[float]:
    """Least-squares fit of 2**f on [0, 1] at Chebyshev nodes, degree 6 (relative error < 1e-8)."""
    f = np.cos(np.linspace(0.0, np.pi, 400)) * 0.5 + 0.5
    return [float(c) for c in np.polynomial.polynomial.polyfit(f, 2.0 ** f, 6)]


_EXP2_C = _exp2_coefficients()


def fast_exp2(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``2 ** x`` for float32 ``x <= 0`` (inputs below -126 give 2**-126): the exponent goes straight into
    the float's exponent bits, the fraction through a degree-6 polynomial. Relative error ~2e-7; only
    arithmetic, so it vectorises (``T.exp2`` is a libm call per element on the CPU)."""
    f32 = "float32"
    x = tirx.max(x, tirx.const(-126.0, f32))
    xi = tirx.floor(x)
    frac = x - xi
    poly = tirx.const(_EXP2_C[-1], f32)
    for c in reversed(_EXP2_C[:-1]):
        poly = poly * frac + tirx.const(c, f32)
    bits = tirx.reinterpret("int32", poly) + tirx.shift_left(tirx.Cast("int32", xi), tirx.const(23, "int32"))
    return tirx.reinterpret(f32, bits)


# -- paged decode attention ---------------------------------------------------------------------------------
def paged_decode(h_kv: int, h_q: int, d: int, dtype: str, sliding_window: int = 0, page_size: int = 16):
    """`batch_decode_paged_kv_cpu(q, pages, page_indptr, page_values, length_info, k_rope_pos_offset,
    q_rope_position, output, lse, rotary_mode, rope_scale, rope_theta, sm_scale)`: one query token per
    sequence attending to its cached pages; output and base-2 log-sum-exp per query head."""
    group = h_q // h_kv
    lanes = lanes_of(d)
    chunks = d // lanes
    window = int(sliding_window)
    tile = EXP_TILE
    line_elems = min(d, 64 * 8 // DataType(dtype).bits)  # elements of one 64-byte cache line
    line_steps = (d + line_elems - 1) // line_elems

    @T.macro
    def prefetch_key(pages, page_values, p0, hk, key):
        # the cache lines of cached key `key` (and its value) of KV head hk, the sequence's pages from p0 on
        for kv in T.unroll(2):
            for c0 in T.unroll(line_steps):
                T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch.p0", T.address_of(pages[
                    page_values[p0 + key // page_size], kv, hk, key % page_size, c0 * line_elems]),
                    T.int32(0), T.int32(2), T.int32(1)))

    def cached_keys(b, page_indptr, last_page_len):
        # keys that sequence b has in its pages
        npages = page_indptr[b + 1] - page_indptr[b]
        return T.if_then_else(npages > 0, (npages - 1) * page_size + last_page_len[b], 0)

    def first_key(b, nkv, q_rope_position, k_rope_pos_offset):
        # the first of sequence b's nkv keys that its query sees (past the sliding window's start)
        return T.if_then_else(
            window > 0, T.min(T.max(q_rope_position[b] - window + 1 - k_rope_pos_offset[b], 0), nkv), 0)

    @T.macro
    def task(bk, part, parts, ntasks, q, pages, page_indptr, page_values, last_page_len, k_rope_pos_offset,
             q_rope_position, output, lse, part_o, part_ms, sm_scale, direct):
        # Keys [lo, nkv) of sequence b are cut into `parts` equal ranges; this task takes range `part`.
        # direct: write the output and lse; else the unnormalised output, running max and sum of the range.
        # Task bk * parts + part of ntasks; a thread runs consecutive ones, so the last keys of a range
        # prefetch the first ones of the next task's range.
        with T.sblock("attn"):
            T.reads()
            T.writes()
            qv = T.sblock_alloc_buffer((group, d), "float32")
            o = T.sblock_alloc_buffer((group, d), "float32")
            scores = T.sblock_alloc_buffer((group, BLOCK), "float32")
            acc = T.sblock_alloc_buffer((lanes,), "float32")
            vec = T.sblock_alloc_buffer((tile,), "float32")
            run_max = T.sblock_alloc_buffer((group,), "float32")
            run_sum = T.sblock_alloc_buffer((group,), "float32")
            blk = T.sblock_alloc_buffer((2,), "float32")
            b: T.let[T.int32] = bk // h_kv
            hk: T.let[T.int32] = bk % h_kv
            p0: T.let[T.int32] = page_indptr[b]
            nkv: T.let[T.int32] = cached_keys(b, page_indptr, last_page_len)
            lo: T.let[T.int32] = first_key(b, nkv, q_rope_position, k_rope_pos_offset)
            for g in T.serial(group):
                for c in T.vectorized(d):
                    qv[g, c] = T.Cast("float32", q[b, hk * group + g, c]) * sm_scale * T.float32(LOG2E)
                    o[g, c] = T.float32(0)
                run_max[g] = T.float32(NO_KEYS_LSE)
                run_sum[g] = T.float32(0)
            span: T.let[T.int32] = (nkv - lo + parts - 1) // parts
            k0: T.let[T.int32] = T.min(lo + part * span, nkv)
            k1: T.let[T.int32] = T.min(k0 + span, nkv)
            # the next task's range: keys [xk0, xk1) of KV head xhk of sequence xb (empty after the last task)
            xt: T.let[T.int32] = T.min(bk * parts + part + 1, ntasks - 1)
            xb: T.let[T.int32] = xt // parts // h_kv
            xhk: T.let[T.int32] = xt // parts % h_kv
            xp0: T.let[T.int32] = page_indptr[xb]
            xnkv: T.let[T.int32] = cached_keys(xb, page_indptr, last_page_len)
            xlo: T.let[T.int32] = first_key(xb, xnkv, q_rope_position, k_rope_pos_offset)
            xspan: T.let[T.int32] = (xnkv - xlo + parts - 1) // parts
            xk0: T.let[T.int32] = T.min(xlo + xt % parts * xspan, xnkv)
            xk1: T.let[T.int32] = T.if_then_else(bk * parts + part + 1 < ntasks, T.min(xk0 + xspan, xnkv), xk0)
            # The range's keys and values come from memory in page-sized runs, which the hardware
            # prefetcher ramps up on one at a time: ask for the lines of the first PREFETCH_AHEAD keys now,
            # and for those of key j + PREFETCH_AHEAD while scoring key j.
            for j in T.serial(T.min(k1 - k0, PREFETCH_AHEAD)):
                prefetch_key(pages, page_values, p0, hk, k0 + j)
            for kb in T.serial((k1 - k0 + BLOCK - 1) // BLOCK):
                j0: T.let[T.int32] = k0 + kb * BLOCK
                nb: T.let[T.int32] = T.min(BLOCK, k1 - j0)
                for j in T.serial(nb):
                    if j0 + j + PREFETCH_AHEAD < k1:
                        prefetch_key(pages, page_values, p0, hk, j0 + j + PREFETCH_AHEAD)
                    elif j0 + j + PREFETCH_AHEAD - k1 < xk1 - xk0:
                        prefetch_key(pages, page_values, xp0, xhk, xk0 + j0 + j + PREFETCH_AHEAD - k1)
                    for g in T.unroll(group):
                        for l in T.vectorized(lanes):
                            acc[l] = qv[g, l] * T.Cast("float32", pages[
                                page_values[p0 + (j0 + j) // page_size], 0, hk, (j0 + j) % page_size, l])
                        for c0 in T.unroll(1, chunks):
                            for l in T.vectorized(lanes):
                                acc[l] = acc[l] + qv[g, c0 * lanes + l] * T.Cast("float32", pages[
                                    page_values[p0 + (j0 + j) // page_size], 0, hk, (j0 + j) % page_size,
                                    c0 * lanes + l])
                        if lanes >= 16:
                            for l in T.vectorized(8):
                                acc[l] = acc[l] + acc[l + 8]
                        if lanes >= 8:
                            for l in T.vectorized(4):
                                acc[l] = acc[l] + acc[l + 4]
                        if lanes >= 4:
                            for l in T.vectorized(2):
                                acc[l] = acc[l] + acc[l + 2]
                        if lanes >= 2:
                            acc[0] = acc[0] + acc[1]
                        scores[g, j] = acc[0]
                for g in T.serial(group):
                    for l in T.vectorized(tile):
                        vec[l] = T.float32(NO_KEYS_LSE)
                    for t in T.serial((nb + tile - 1) // tile):
                        for l in T.vectorized(tile):
                            # Select, not if_then_else: both sides are computed, so the loop vectorises
                            # (the lanes past nb read stale scores of this block buffer and are masked).
                            vec[l] = T.max(vec[l], T.Select(t * tile + l < nb, scores[g, t * tile + l],
                                                            T.float32(NO_KEYS_LSE)))
                    blk[0] = run_max[g]
                    for l in T.serial(tile):
                        blk[0] = T.max(blk[0], vec[l])
                    blk[1] = fast_exp2(run_max[g] - blk[0])  # rescales what the earlier blocks summed
                    run_max[g] = blk[0]
                    run_sum[g] = run_sum[g] * blk[1]
                    for c in T.vectorized(d):
                        o[g, c] = o[g, c] * blk[1]
                    for l in T.vectorized(tile):
                        vec[l] = T.float32(0)
                    for t in T.serial((nb + tile - 1) // tile):
                        for l in T.vectorized(tile):
                            scores[g, t * tile + l] = T.Select(
                                t * tile + l < nb, fast_exp2(scores[g, t * tile + l] - blk[0]), T.float32(0))
                            vec[l] = vec[l] + scores[g, t * tile + l]
                    for l in T.serial(tile):
                        run_sum[g] = run_sum[g] + vec[l]
                for j in T.serial(nb):
                    for g in T.unroll(group):
                        for c0 in T.unroll(chunks):
                            for l in T.vectorized(lanes):
                                o[g, c0 * lanes + l] = o[g, c0 * lanes + l] + scores[g, j] * T.Cast(
                                    "float32", pages[page_values[p0 + (j0 + j) // page_size], 1, hk,
                                                     (j0 + j) % page_size, c0 * lanes + l])
            if direct:
                for g in T.serial(group):
                    for c in T.vectorized(d):
                        output[b, hk * group + g, c] = T.Cast(dtype, T.if_then_else(
                            run_sum[g] > T.float32(0), o[g, c] / run_sum[g], T.float32(0)))
                    lse[b, hk * group + g] = T.if_then_else(
                        run_sum[g] > T.float32(0), run_max[g] + T.log2(run_sum[g]), T.float32(NO_KEYS_LSE))
            else:
                for g in T.serial(group):
                    for c in T.vectorized(d):
                        part_o[bk, part, g, c] = o[g, c]
                    part_ms[bk, part, g, 0] = run_max[g]
                    part_ms[bk, part, g, 1] = run_sum[g]

    def n_parts(nnz_pages, batch_size):
        keys = nnz_pages * page_size // batch_size  # per sequence, on average
        balance = T.min((MIN_TASKS + batch_size * h_kv - 1) // (batch_size * h_kv), keys // MIN_PART_KEYS)
        return T.max(1, T.min(MAX_SPLIT, T.max(balance, keys // SPLIT_KEYS)))

    @T.macro
    def merge(bk, parts, output, lse, part_o, part_ms):
        # Combines the ranges of (sequence, KV head) `bk`: rescale each to the overall max and normalise.
        with T.sblock("merge"):
            T.reads()
            T.writes()
            o = T.sblock_alloc_buffer((d,), "float32")
            ms = T.sblock_alloc_buffer((2,), "float32")
            b: T.let[T.int32] = bk // h_kv
            hk: T.let[T.int32] = bk % h_kv
            for g in T.serial(group):
                ms[0] = T.float32(NO_KEYS_LSE)
                for p in T.serial(parts):
                    ms[0] = T.max(ms[0], part_ms[bk, p, g, 0])
                ms[1] = T.float32(0)
                for c in T.vectorized(d):
                    o[c] = T.float32(0)
                for p in T.serial(parts):
                    for c in T.vectorized(d):
                        o[c] = o[c] + part_o[bk, p, g, c] * fast_exp2(part_ms[bk, p, g, 0] - ms[0])
                    ms[1] = ms[1] + part_ms[bk, p, g, 1] * fast_exp2(part_ms[bk, p, g, 0] - ms[0])
                for c in T.vectorized(d):
                    output[b, hk * group + g, c] = T.Cast(dtype, T.if_then_else(
                        ms[1] > T.float32(0), o[c] / ms[1], T.float32(0)))
                lse[b, hk * group + g] = T.if_then_else(ms[1] > T.float32(0), ms[0] + T.log2(ms[1]),
                                                        T.float32(NO_KEYS_LSE))

    # pylint: disable=too-many-locals,too-many-statements,unused-argument
    @T.prim_func(s_tir=True)
    def batch_decode_paged_kv_cpu(var_q: T.handle, var_pages: T.handle, var_page_indptr: T.handle,
                                  var_page_values: T.handle, var_length_info: T.handle,
                                  var_k_rope_pos_offset: T.handle, var_q_rope_position: T.handle,
                                  var_output: T.handle, var_lse: T.handle, rotary_mode: T.int32,
                                  rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch_size = T.int32()
        nnz_pages = T.int32()
        max_num_pages = T.int32()
        page_indptr_off = T.int32()
        page_values_off = T.int32()
        k_pos_off = T.int32()
        q_pos_off = T.int32()
        length_info_off = T.int32()
        q = T.match_buffer(var_q, (batch_size, h_q, d), dtype)
        pages = T.match_buffer(var_pages, (max_num_pages, 2, h_kv, page_size, d), dtype)
        page_indptr = T.match_buffer(var_page_indptr, (batch_size + 1,), "int32", elem_offset=page_indptr_off)
        page_values = T.match_buffer(var_page_values, (nnz_pages,), "int32", elem_offset=page_values_off)
        last_page_len = T.match_buffer(var_length_info, (batch_size,), "int32", elem_offset=length_info_off)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=k_pos_off)
        q_rope_position = T.match_buffer(var_q_rope_position, (batch_size,), "int32", elem_offset=q_pos_off)
        output = T.match_buffer(var_output, (batch_size, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (batch_size, h_q), "float32")

        T.Assert(rotary_mode == 0, "Spindle's CPU attention expects RoPE applied before the cache append")
        with T.sblock("decode"):
            T.reads()
            T.writes()
            # Each (sequence, KV head) is cut into `parts` key ranges: of about SPLIT_KEYS for a long
            # context (at most MAX_SPLIT), and into at least MIN_TASKS tasks when there are few pairs.
            part_o = T.sblock_alloc_buffer((batch_size * h_kv, n_parts(nnz_pages, batch_size), group, d), "float32")
            part_ms = T.sblock_alloc_buffer((batch_size * h_kv, n_parts(nnz_pages, batch_size), group, 2), "float32")
            if nnz_pages * page_size * h_q < DECODE_PARALLEL_MIN:
                for bk in T.serial(batch_size * h_kv):
                    task(bk, 0, 1, batch_size * h_kv, q, pages, page_indptr, page_values, last_page_len,
                         k_rope_pos_offset, q_rope_position, output, lse, part_o, part_ms, sm_scale, True)
            elif n_parts(nnz_pages, batch_size) == 1:
                for bk in T.parallel(batch_size * h_kv):
                    task(bk, 0, 1, batch_size * h_kv, q, pages, page_indptr, page_values, last_page_len,
                         k_rope_pos_offset, q_rope_position, output, lse, part_o, part_ms, sm_scale, True)
            else:
                for t in T.parallel(batch_size * h_kv * n_parts(nnz_pages, batch_size)):
                    task(t // n_parts(nnz_pages, batch_size), t % n_parts(nnz_pages, batch_size),
                         n_parts(nnz_pages, batch_size), batch_size * h_kv * n_parts(nnz_pages, batch_size),
                         q, pages, page_indptr, page_values, last_page_len,
                         k_rope_pos_offset, q_rope_position, output, lse, part_o, part_ms, sm_scale, False)
                for bk in T.serial(batch_size * h_kv):
                    merge(bk, n_parts(nnz_pages, batch_size), output, lse, part_o, part_ms)

    return batch_decode_paged_kv_cpu


# -- q/k/v split with RoPE ----------------------------------------------------------------------------------
def split_rotary_default(theta: float, scale: float, d: int, h_q: int, h_kv: int, dtype: str):
    """`tir_split_rotary(qkv, position_map, q, k, v, apply_rope)` for RoPE without frequency scaling
    (``default``; ``linear`` is the position ``scale``): rotate-half with the angle
    ``float32(pos * scale) / float32(theta ** (2i / d))`` rounded in float32 and libm's cos/sin of it, as
    Hugging Face and TVM's kernel compute them (a quantized model's int8 activations can turn a last-bit
    difference into a different token on a near tie). The divisors are computed once per call, the cos/sin
    once per token and frequency for all heads (TVM's kernel evaluates pow, cos and sin per head and
    dimension)."""
    fused = h_q + 2 * h_kv
    half = d // 2
    step = float(theta) ** (2.0 / d)

    @T.macro
    def token(s, qkv, position_map, q, k, v, apply_rope, inv):
        with T.sblock("rope"):
            T.reads()
            T.writes()
            cs = T.sblock_alloc_buffer((half,), "float32")
            sn = T.sblock_alloc_buffer((half,), "float32")
            for i in T.vectorized(half):
                cs[i] = T.if_then_else(apply_rope > 0, T.cos(
                    T.Cast("float32", position_map[s]) * T.float32(scale) / inv[i]), T.float32(1))
                sn[i] = T.if_then_else(apply_rope > 0, T.sin(
                    T.Cast("float32", position_map[s]) * T.float32(scale) / inv[i]), T.float32(0))
            for h in T.serial(h_q):
                for i in T.vectorized(half):
                    q[s, h, i] = T.Cast(dtype, cs[i] * T.Cast("float32", qkv[s, h, i])
                                        - sn[i] * T.Cast("float32", qkv[s, h, i + half]))
                    q[s, h, i + half] = T.Cast(dtype, cs[i] * T.Cast("float32", qkv[s, h, i + half])
                                               + sn[i] * T.Cast("float32", qkv[s, h, i]))
            for h in T.serial(h_kv):
                for i in T.vectorized(half):
                    k[s, h, i] = T.Cast(dtype, cs[i] * T.Cast("float32", qkv[s, h_q + h, i])
                                        - sn[i] * T.Cast("float32", qkv[s, h_q + h, i + half]))
                    k[s, h, i + half] = T.Cast(dtype, cs[i] * T.Cast("float32", qkv[s, h_q + h, i + half])
                                               + sn[i] * T.Cast("float32", qkv[s, h_q + h, i]))
                for c in T.vectorized(d):
                    v[s, h, c] = qkv[s, h_q + h_kv + h, c]

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
        with T.sblock("inv_freq"):
            T.reads()
            T.writes()
            den = T.sblock_alloc_buffer((half,), "float64")  # theta ** (2i / d), exact to ~1e-15
            inv = T.sblock_alloc_buffer((half,), "float32")  # ... rounded to float32 (the divisor)
            den[0] = T.float64(1)
            for i in T.serial(1, half):
                den[i] = den[i - 1] * T.float64(step)
            for i in T.serial(half):
                inv[i] = T.Cast("float32", den[i])
            if seq_len >= ROPE_PARALLEL_MIN:
                for s in T.parallel(seq_len):
                    token(s, qkv, position_map, q, k, v, apply_rope, inv)
            else:
                for s in T.serial(seq_len):
                    token(s, qkv, position_map, q, k, v, apply_rope, inv)

    return split_rotary_cpu


# -- k/v append -------------------------------------------------------------------------------------------
def transpose_append(h_kv: int, d: int, dtype: str, page_size: int = 16):
    """`kv_cache_transpose_append(pages, k_data, v_data, position_map)`: each new token's k and v into its
    page slot (``position_map``: page * page_size + offset, -1 to skip)."""

    @T.macro
    def token(t, pages, k_data, v_data, position_map):
        if position_map[t] != -1:
            for h in T.serial(h_kv):
                for c in T.vectorized(d):
                    pages[T.Cast("int64", position_map[t] // page_size), 0, h, T.Cast("int64", position_map[t] % page_size), c] = k_data[t, h, c]
                for c in T.vectorized(d):
                    pages[T.Cast("int64", position_map[t] // page_size), 1, h, T.Cast("int64", position_map[t] % page_size), c] = v_data[t, h, c]

    @T.prim_func(s_tir=True)
    def kv_cache_transpose_append(var_pages: T.handle, var_k_data: T.handle, var_v_data: T.handle,
                                  var_position_map: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        ntoken = T.int64()
        num_pages = T.int64()
        pages_elem_offset = T.int64()
        position_map_elem_offset = T.int32()
        pages = T.match_buffer(var_pages, (num_pages, 2, h_kv, page_size, d), dtype, elem_offset=pages_elem_offset)
        k_data = T.match_buffer(var_k_data, (ntoken, h_kv, d), dtype)
        v_data = T.match_buffer(var_v_data, (ntoken, h_kv, d), dtype)
        position_map = T.match_buffer(var_position_map, (ntoken,), "int32", elem_offset=position_map_elem_offset)
        with T.sblock("append"):  # the body is a block, as Relax's kernel analysis expects
            T.reads()
            T.writes()
            if ntoken >= APPEND_PARALLEL_MIN:
                for t in T.parallel(ntoken):
                    token(t, pages, k_data, v_data, position_map)
            else:
                for t in T.serial(ntoken):
                    token(t, pages, k_data, v_data, position_map)

    return kv_cache_transpose_append
