"""Decode matmuls by float32 / float16 weights: `fmatmul.c`, linked into model libraries like the int8 kernels.

`float_matmul_func` builds the TIR PrimFunc a float `Linear` calls in `batch_decode` (and every tied or
untied output head): `y[d0, d1, N] = x[d0, d1, K] @ W[N, K].T (+ res)` in the activations' dtype, with the
threads of one TVM parallel loop taking ranges of 64 columns from a shared counter (`spindle_fmm_sched`).
`float_norm_matmul_func` and `float_mlp_block_func` build the fused decode blocks of float layers
(`spindle_fblock_norm_matmul`, `spindle_fblock_mlp`): a decoder layer's norms, matmuls and SwiGLU around its
attention in one parallel region each, as the int8 kernels' blocks (`kernels.norm_matmul_func`).
`SOURCE_DIGEST` makes the compiler fingerprint follow the C sources (see `kernels/__init__.py`).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from . import PARALLEL_SLOTS, compile_source, rows_shape, sources_digest, sync_words

SOURCE = Path(__file__).with_name("fmatmul.c")
SOURCE_DIGEST = "7a29ba7a64fe09e11a0888f055aa494faa5e13bb0f8f72f23a155a4b61874bab"
DTYPE_CODES = {"float32": 0, "float16": 1}


def source_digest() -> str:
    return sources_digest(SOURCE)


def _compile(out: Path, shared: bool) -> Path:
    return compile_source(SOURCE, SOURCE_DIGEST, "floatmm", out, shared)


@functools.lru_cache(maxsize=None)
def object_file() -> str:
    """`fmatmul.c` compiled to a position-independent object (once per process, in a temp dir)."""
    tmp = Path(tempfile.mkdtemp(prefix="spindle-fkernels-"))
    return str(_compile(tmp / "fmatmul.o", shared=False))


def shared_library(out_dir) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _compile(out_dir / "libspindle_fmatmul.so", shared=True)


@functools.lru_cache(maxsize=None)
def load_into_process() -> str:
    """Load the kernels with global symbols, once per process (for libraries run without export_library)."""
    import ctypes  # pylint: disable=import-outside-toplevel

    path = shared_library(tempfile.mkdtemp(prefix="spindle-fkernels-"))
    ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    return str(path)


def float_matmul_func(in_features: int, out_features: int, act_dtype: str, weight_dtype: str,
                      residual: bool = False):
    """The PrimFunc `(x[d0, d1, K], w[N, K], (res[d0, d1, N]), y[d0, d1, N])` (x, res, y in act_dtype)."""
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel
    import tvm  # pylint: disable=import-outside-toplevel

    load_into_process()
    k, n = int(in_features), int(out_features)
    adt, wdt = DTYPE_CODES[act_dtype], DTYPE_CODES[weight_dtype]
    a_t, i32 = T.type_annotation(act_dtype), T.type_annotation("int32")
    null = tvm.tirx.reinterpret("handle", tvm.tirx.const(0, "uint64"))

    # pylint: disable=no-member,invalid-name,unused-variable
    @T.macro
    def run(x, w, y, res_ptr, rows):
        counter = T.decl_buffer((1,), "int32")
        counter[0] = 0
        for slot in T.parallel(T.int64(PARALLEL_SLOTS)):
            T.evaluate(T.call_extern(
                "int32", "spindle_fmm_sched", T.tvm_access_ptr(i32, counter.data, 0, 1, 3),
                T.tvm_access_ptr(a_t, x.data, 0, rows * k, 1), rows, T.address_of(w[0, 0]), T.int64(k),
                T.int64(n), T.tvm_access_ptr(a_t, y.data, 0, rows * n, 2), res_ptr, adt, wdt))

    if residual:

        @T.prim_func(private=True)
        def func_res(var_x: T.handle, w: T.Buffer((n, k), weight_dtype), var_r: T.handle, var_y: T.handle):
            T.func_attr({"tirx.is_scheduled": True, "tir.noalias": True, "op_pattern": 8})
            d0, d1 = T.int64(), T.int64()
            x = T.match_buffer(var_x, (d0, d1, k), act_dtype)
            res = T.match_buffer(var_r, (d0, d1, n), act_dtype)
            y = T.match_buffer(var_y, (d0, d1, n), act_dtype)
            run(x, w, y, T.tvm_access_ptr(a_t, res.data, 0, d0 * d1 * n, 1), d0 * d1)

        return func_res

    @T.prim_func(private=True)
    def func(var_x: T.handle, w: T.Buffer((n, k), weight_dtype), var_y: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tir.noalias": True, "op_pattern": 8})  # opaque, never fused
        d0, d1 = T.int64(), T.int64()
        x = T.match_buffer(var_x, (d0, d1, k), act_dtype)
        y = T.match_buffer(var_y, (d0, d1, n), act_dtype)
        run(x, w, y, null, d0 * d1)

    return func


def _ahead(ahead: tuple[int, int] | None, own: tuple[int, int]):
    """(has_next, in_features, out_features) of the matrix a block prefetches for the next VM call: `ahead`
    as (in_features, out_features), or None (then the block gets its own matrix as the argument, unread)."""
    k, n = ahead or own
    return int(ahead is not None), int(k), int(n)


def float_norm_matmul_func(dtype: str, in_features: int, out_features: int, eps: float,
                           ahead: tuple[int, int] | None = None, heads: tuple[int, int] | None = None):
    """The PrimFunc `(x[d0, d1, K], norm_w[K], w[N, K], next_w, y[d0, d1, N])` of
    `spindle_fblock_norm_matmul`: `y = rmsnorm(x) @ W.T`, everything in `dtype` (one VM call and one parallel
    region instead of a norm kernel and a matmul). `next_w` is the matrix the next VM call starts with,
    `ahead` = its (in_features, out_features); each thread asks for the head of its half of it as it
    finishes. Without `ahead`, pass the block's own matrix (not read). `heads`: y is shaped
    `[d0 * d1, heads, head_dim]` instead (`kernels.rows_shape`)."""
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel

    load_into_process()
    k, n, dt = int(in_features), int(out_features), DTYPE_CODES[dtype]
    has_next, nk, nn = _ahead(ahead, (k, n))
    a_t, i32 = T.type_annotation(dtype), T.type_annotation("int32")

    # pylint: disable=no-member,invalid-name,unused-variable
    @T.prim_func(private=True)
    def func(var_x: T.handle, norm_w: T.Buffer((k,), dtype), w: T.Buffer((n, k), dtype),
             next_w: T.Buffer((nn, nk), dtype), var_y: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tir.noalias": True, "op_pattern": 8})
        d0, d1 = T.int64(), T.int64()
        x = T.match_buffer(var_x, (d0, d1, k), dtype)
        y = T.match_buffer(var_y, rows_shape(d0, d1, n, heads), dtype)
        xn = T.decl_buffer((d0 * d1 * k,), dtype)
        sync = T.decl_buffer((sync_words(2),), "int32")
        for i in range(sync_words(2)):
            sync[i] = 0
        for slot in T.parallel(T.int64(PARALLEL_SLOTS)):
            T.evaluate(T.call_extern(
                "int32", "spindle_fblock_norm_matmul", T.tvm_access_ptr(i32, sync.data, 0, sync_words(2), 3),
                T.Cast("int32", slot * 2 // PARALLEL_SLOTS), d0 * d1,
                T.tvm_access_ptr(a_t, x.data, 0, d0 * d1 * k, 1), T.address_of(norm_w[0]), T.float32(eps),
                T.int64(k), T.tvm_access_ptr(a_t, xn.data, 0, d0 * d1 * k, 3), T.address_of(w[0, 0]), T.int64(n),
                T.tvm_access_ptr(a_t, y.data, 0, d0 * d1 * n, 2), dt, has_next, T.address_of(next_w[0, 0]),
                T.int64(nk), T.int64(nn)))

    return func


def float_mlp_block_func(dtype: str, attn_features: int, hidden: int, inter: int, eps: float,
                         ahead: tuple[int, int] | None = None, link: tuple[int, float] | None = None,
                         a_heads: tuple[int, int] | None = None, z_heads: tuple[int, int] | None = None):
    """The PrimFunc of `spindle_fblock_mlp`, what a decoder layer does after its attention, in `dtype`:

        (a[d0, d1, A], x[d0, d1, H], o_proj w[H, A], norm_w[H], gate_up w[2I, H], down w[H, I], next_w,
         y[d0, d1, H])
        x2 = x + a @ Wo.T;  y = x2 + swiglu(rmsnorm(x2) @ Wgu.T) @ Wd.T

    gate_up's rows are the gate rows, then the up rows. `next_w` and `ahead` as for
    `float_norm_matmul_func` (the next layer's QKV, or the output head).

    `link` = (out_features2, eps2) adds what the next VM call would start with, in the same parallel region
    (as `kernels.mlp_block_func`'s link): the next layer's input norm and QKV matmul, or the final norm and
    the output head. The PrimFunc then takes `norm2_w[H]` and `w2[N2, H]` after `down w`, and has a second
    output `z[d0, d1, N2] = rmsnorm(y; norm2_w, eps2) @ W2.T`; `ahead` is then the matrix after that (the
    next layer's o_proj), or None.

    `a_heads` / `z_heads`: a / z are shaped `[d0 * d1, heads, head_dim]` (`rows_shape`), as the attention
    writes and reads them. x is read only in the o_proj phase and y written only in the down phase, two
    waits later, so y may be x itself (Relax `call_tir_inplace`), and z any buffer that a, x and the
    weights are not."""
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel
    import tvm  # pylint: disable=import-outside-toplevel

    load_into_process()
    a_, h_, i_, dt = int(attn_features), int(hidden), int(inter), DTYPE_CODES[dtype]
    has_next, nk, nn = _ahead(ahead, (i_, h_))
    n2, eps2 = (int(link[0]), float(link[1])) if link else (0, 0.0)
    phases = 6 if link else 4
    a_t, i32 = T.type_annotation(dtype), T.type_annotation("int32")
    null = tvm.tirx.reinterpret("handle", tvm.tirx.const(0, "uint64"))

    # pylint: disable=no-member,invalid-name,unused-variable,too-many-arguments
    @T.macro
    def block(a, x, wo, norm_w, wg, wd, next_w, y, norm2_ptr, w2_ptr, z_ptr, rows):
        xn = T.decl_buffer((rows * h_,), dtype)
        x2 = T.decl_buffer((rows * h_,), dtype)
        gu = T.decl_buffer((rows * 2 * i_,), dtype)
        hb = T.decl_buffer((rows * i_,), dtype)
        sync = T.decl_buffer((sync_words(phases),), "int32")
        for i in range(sync_words(phases)):
            sync[i] = 0
        for slot in T.parallel(T.int64(PARALLEL_SLOTS)):
            T.evaluate(T.call_extern(
                "int32", "spindle_fblock_mlp", T.tvm_access_ptr(i32, sync.data, 0, sync_words(phases), 3),
                T.Cast("int32", slot * 2 // PARALLEL_SLOTS), rows,
                T.tvm_access_ptr(a_t, a.data, 0, rows * a_, 1), T.int64(a_),
                T.tvm_access_ptr(a_t, x.data, 0, rows * h_, 1), T.int64(h_), T.int64(i_),
                T.address_of(wo[0, 0]), T.address_of(norm_w[0]), T.float32(eps), T.address_of(wg[0, 0]),
                T.address_of(wd[0, 0]), T.tvm_access_ptr(a_t, xn.data, 0, rows * h_, 3),
                T.tvm_access_ptr(a_t, x2.data, 0, rows * h_, 3),
                T.tvm_access_ptr(a_t, gu.data, 0, rows * 2 * i_, 3),
                T.tvm_access_ptr(a_t, hb.data, 0, rows * i_, 3),
                T.tvm_access_ptr(a_t, y.data, 0, rows * h_, 2), norm2_ptr, T.float32(eps2), w2_ptr, T.int64(n2),
                z_ptr, dt, has_next, T.address_of(next_w[0, 0]), T.int64(nk), T.int64(nn)))

    if link:

        @T.prim_func(private=True)
        def linked(var_a: T.handle, var_x: T.handle, wo: T.Buffer((h_, a_), dtype), norm_w: T.Buffer((h_,), dtype),
                   wg: T.Buffer((2 * i_, h_), dtype), wd: T.Buffer((h_, i_), dtype),
                   norm2_w: T.Buffer((h_,), dtype), w2: T.Buffer((n2, h_), dtype),
                   next_w: T.Buffer((nn, nk), dtype), var_y: T.handle, var_z: T.handle):
            T.func_attr({"tirx.is_scheduled": True, "op_pattern": 8})
            d0, d1 = T.int64(), T.int64()
            x = T.match_buffer(var_x, (d0, d1, h_), dtype)
            a = T.match_buffer(var_a, rows_shape(d0, d1, a_, a_heads), dtype)
            y = T.match_buffer(var_y, (d0, d1, h_), dtype)
            z = T.match_buffer(var_z, rows_shape(d0, d1, n2, z_heads), dtype)
            block(a, x, wo, norm_w, wg, wd, next_w, y, T.address_of(norm2_w[0]), T.address_of(w2[0, 0]),
                  T.tvm_access_ptr(a_t, z.data, 0, d0 * d1 * n2, 2), d0 * d1)

        return linked

    @T.prim_func(private=True)
    def func(var_a: T.handle, var_x: T.handle, wo: T.Buffer((h_, a_), dtype), norm_w: T.Buffer((h_,), dtype),
             wg: T.Buffer((2 * i_, h_), dtype), wd: T.Buffer((h_, i_), dtype), next_w: T.Buffer((nn, nk), dtype),
             var_y: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "op_pattern": 8})
        d0, d1 = T.int64(), T.int64()
        x = T.match_buffer(var_x, (d0, d1, h_), dtype)
        a = T.match_buffer(var_a, rows_shape(d0, d1, a_, a_heads), dtype)
        y = T.match_buffer(var_y, (d0, d1, h_), dtype)
        block(a, x, wo, norm_w, wg, wd, next_w, y, null, null, null, d0 * d1)

    return func
