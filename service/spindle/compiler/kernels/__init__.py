"""Hand-written CPU kernels linked into model libraries: integer-dot matmuls by q4_1 / q8_0 weights.

`qmatmul.c` holds the C micro-kernels (AVX-512 VNNI with a portable fallback picked at run time; see the
comment at its top). `int8_matmul_func` builds the TIR PrimFunc a `QuantizedLinear` calls: it quantizes the
activation rows to int8 into a scratch buffer, then the threads of one TVM parallel loop take ranges of
column tiles from a shared counter. `object_file` compiles the C source with the compiler TVM links with; `build.py` passes it to
`export_library(addons=...)` so every model library carries the symbols its kernels call.

`SOURCE_DIGEST` is the SHA-256 of `qmatmul.c` and the header it shares with `fmatmul.c` (`blocks.h`, the
fused blocks' phase machinery). It lives in this Python file so that the compiler fingerprint (a hash of the
compiler's `.py` sources, part of every artifact cache key) changes when the C sources do; `object_file`
refuses sources that do not match it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("qmatmul.c")
HEADERS = (Path(__file__).with_name("blocks.h"),)  # included by both C sources
SOURCE_DIGEST = "96aeae24c5facff81f785dd1c9e5e678ff70448bcfedfdc0ae605f9f8518b33b"
BLOCK = 32
PARALLEL_SLOTS = 16  # iterations of the matmul's parallel loop (each takes tiles until none is left)
PARALLEL_QUANTIZE_ROWS = 64  # activation rows from which the quantization runs in parallel
FORMAT_CODES = {"q8_0": 0, "q4_1": 1}
SYNC_WORDS = 32  # int32 words of a fused block's phase (PHASE_WORDS in qmatmul.c): a 64-byte line per half
SYNC_SLACK_WORDS = 16  # words a block's sync array has beyond its phases (the C side aligns it to a line)


def sync_words(phases: int) -> int:
    """Length in int32 of the zeroed sync array of a fused block with `phases` phases."""
    return phases * SYNC_WORDS + SYNC_SLACK_WORDS


class KernelBuildError(RuntimeError):
    """The C kernels could not be compiled (no compiler, or a source that does not match its digest)."""


def sources_digest(source: Path) -> str:
    """SHA-256 of a C source of this package followed by the headers the sources include."""
    h = hashlib.sha256(source.read_bytes())
    for header in HEADERS:
        h.update(header.read_bytes())
    return h.hexdigest()


def source_digest() -> str:
    return sources_digest(SOURCE)


def compiler() -> str:
    """The C compiler TVM links libraries with (`tvm.support.cc.get_cc`: $CXX, $CC, g++, gcc, clang...)."""
    from tvm.support import cc  # pylint: disable=import-outside-toplevel

    path = cc.get_cc()
    if not path:
        raise KernelBuildError("no C compiler found (set CC or CXX)")
    return path


CFLAGS = ("-x", "c", "-std=gnu11", "-O3", "-fPIC", "-fno-math-errno", "-Wall")  # every build of the C sources


def compile_source(source: Path, digest: str, owner: str, out: Path, shared: bool) -> Path:
    """Compile one C source of this package to an object (or, with ``shared``, a shared library) at ``out``,
    after checking it (with the headers) against the digest its Python module ``owner`` records
    (``owner.SOURCE_DIGEST``).

    The object is what model libraries link in: its symbols are hidden, so a library always calls its own
    copy of the kernels, even in a process that holds another library or the kernels loaded globally
    (`load_into_process`) from other sources."""
    actual = sources_digest(source)
    if actual != digest:
        raise KernelBuildError(f"{source.name} does not match {owner}.SOURCE_DIGEST; update the digest to "
                               f"{actual} so that compiled artifacts are rebuilt")
    cmd = [compiler(), *CFLAGS, *(["-shared"] if shared else ["-c", "-fvisibility=hidden"]), str(source), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KernelBuildError(f"compiling {source.name} failed ({' '.join(cmd)}):\n{proc.stderr}")
    return out


def _compile(out: Path, shared: bool) -> Path:
    return compile_source(SOURCE, SOURCE_DIGEST, "kernels", out, shared)


@functools.lru_cache(maxsize=None)
def object_file() -> str:
    """Path of `qmatmul.c` compiled to a position-independent object (once per process, in a temp dir)."""
    tmp = Path(tempfile.mkdtemp(prefix="spindle-kernels-"))
    return str(_compile(tmp / "qmatmul.o", shared=False))


def shared_library(out_dir: os.PathLike) -> Path:
    """`qmatmul.c` as a shared library in `out_dir` (for calling the kernels directly, e.g. with ctypes)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _compile(out_dir / "libspindle_qmatmul.so", shared=True)


@functools.lru_cache(maxsize=None)
def load_into_process() -> str:
    """Load the kernels as a shared library with global symbols, once per process.

    A library compiled and run in memory (`tvm.compile(...)` then `relax.VirtualMachine`, without
    `export_library`) resolves the kernels' symbols in the process; exported libraries carry their own copy.
    """
    import ctypes  # pylint: disable=import-outside-toplevel

    path = shared_library(tempfile.mkdtemp(prefix="spindle-kernels-"))
    ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    return str(path)


@functools.lru_cache(maxsize=None)
def vector_supported() -> bool:
    """Whether this CPU runs the AVX-512 VNNI kernels (else the kernels fall back to portable C).

    Asks LLVM for the host CPU's features (the same set `spindle_qkernel_vector_supported` checks at run
    time), so that choosing a kernel, which every artifact cache lookup does, needs no C build."""
    from tvm.target import Target, codegen  # pylint: disable=import-outside-toplevel

    host = Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()})
    return bool(codegen.target_has_features(["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vnni"], host))


def act_row_bytes(in_features: int) -> int:
    """Bytes of int8 activation scratch per row (mirrors `spindle_qact_row_bytes` in qmatmul.c)."""
    return (in_features + 8 * (in_features // BLOCK) + 63) // 64 * 64


def int8_matmul_func(fmt: str, in_features: int, out_features: int, residual: bool = False):
    """The PrimFunc `(x[d0, d1, K] float32, qweight, y[d0, d1, N] float32)` of the integer-dot kernel.

    `qweight` is the column-tile layout (`quantization.to_tiles`; the tiles hold the scales). With
    `residual`, the PrimFunc takes `res[d0, d1, N] float32` after `qweight` and computes `y = x @ W.T + res`: the
    tile kernel adds `res` to each finished output as it stores it (the same single float add a separate
    elementwise kernel would do). Without it the kernel gets a NULL residual pointer.

    The two leading dimensions are symbolic (decode `[batch, 1, K]`, prefill `[1, seq, K]`), so the layer
    needs no reshapes around the call. Rows are `d0 * d1`; the activation rows are quantized into a scratch
    buffer (in parallel from `PARALLEL_QUANTIZE_ROWS` rows), then every thread of one parallel region takes
    ranges of column tiles from a shared counter (`spindle_qmm_sched`) until all are done.
    """
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel
    import tvm  # pylint: disable=import-outside-toplevel

    load_into_process()
    k, n = int(in_features), int(out_features)
    row_bytes, code = act_row_bytes(k), FORMAT_CODES[fmt]
    qshape, qdtype = _matrix_specs(fmt, n, k)
    par_rows = PARALLEL_QUANTIZE_ROWS
    i8, i32, f32 = T.type_annotation("int8"), T.type_annotation("int32"), T.type_annotation("float32")
    null = tvm.tirx.reinterpret("handle", tvm.tirx.const(0, "uint64"))  # the C kernels' residual pointer when there is none

    # pylint: disable=no-member,invalid-name,unused-variable,unused-argument
    @T.macro
    def quantize(x, act, rows):
        if rows >= par_rows:
            for r in T.parallel(rows):
                T.evaluate(T.call_extern("int32", "spindle_qact_quantize", T.tvm_access_ptr(f32, x.data, r * k, k, 1),
                                         T.int64(k), T.tvm_access_ptr(i8, act.data, r * row_bytes, row_bytes, 2),
                                         code))
        else:
            for r in range(rows):
                T.evaluate(T.call_extern("int32", "spindle_qact_quantize", T.tvm_access_ptr(f32, x.data, r * k, k, 1),
                                         T.int64(k), T.tvm_access_ptr(i8, act.data, r * row_bytes, row_bytes, 2),
                                         code))

    @T.macro
    def tiles(act, qweight, y, res_ptr, rows):
        counter = T.decl_buffer((1,), "int32")
        counter[0] = 0
        for slot in T.parallel(T.int64(PARALLEL_SLOTS)):
            T.evaluate(T.call_extern(
                "int32", "spindle_qmm_sched", T.tvm_access_ptr(i32, counter.data, 0, 1, 3), code,
                T.tvm_access_ptr(i8, act.data, 0, rows * row_bytes, 1), T.int64(row_bytes), rows,
                T.address_of(qweight[0, 0, 0]), T.int64(k), T.int64(n),
                T.tvm_access_ptr(f32, y.data, 0, rows * n, 2), res_ptr))

    if residual:

        @T.prim_func(private=True)
        def func_res(var_x: T.handle, qweight: T.Buffer(qshape, qdtype), var_r: T.handle, var_y: T.handle):
            T.func_attr({"tirx.is_scheduled": True, "tir.noalias": True, "op_pattern": 8})
            d0, d1 = T.int64(), T.int64()
            x = T.match_buffer(var_x, (d0, d1, k), "float32")
            res = T.match_buffer(var_r, (d0, d1, n), "float32")
            y = T.match_buffer(var_y, (d0, d1, n), "float32")
            act = T.decl_buffer((d0 * d1 * row_bytes,), "int8")
            quantize(x, act, d0 * d1)
            tiles(act, qweight, y, T.tvm_access_ptr(f32, res.data, 0, d0 * d1 * n, 1), d0 * d1)

        return func_res

    @T.prim_func(private=True)
    def func(var_x: T.handle, qweight: T.Buffer(qshape, qdtype), var_y: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tir.noalias": True, "op_pattern": 8})  # 8: opaque, never fused
        d0, d1 = T.int64(), T.int64()
        x = T.match_buffer(var_x, (d0, d1, k), "float32")
        y = T.match_buffer(var_y, (d0, d1, n), "float32")
        act = T.decl_buffer((d0 * d1 * row_bytes,), "int8")
        quantize(x, act, d0 * d1)
        tiles(act, qweight, y, null, d0 * d1)

    return func


def _matrix_specs(fmt: str, out_features: int, in_features: int):
    """(shape, dtype) of one tiled matrix: its `qweight`, which holds the scales (and minimums) too."""
    from ..quantization import tiled_specs  # pylint: disable=import-outside-toplevel

    return tiled_specs(fmt, out_features, in_features)["qweight"]


def _ahead(ahead: tuple[str, int, int] | None, own: tuple[str, int, int]):
    """(code, in_features, out_features, qweight shape, dtype) of the matrix a block prefetches for the next
    VM call: `ahead` as (fmt, in_features, out_features), or None (then the block gets its own matrix as
    the argument and code -1: no prefetch)."""
    fmt, k, n = ahead or own
    shape, dtype = _matrix_specs(fmt, int(n), int(k))
    return (FORMAT_CODES[fmt] if ahead else -1), int(k), int(n), shape, dtype


def rows_shape(d0, d1, n: int, heads: tuple[int, int] | None = None):
    """The shape a fused block gives an activation tensor of ``d0 * d1`` rows of ``n`` values: ``[d0, d1, n]``,
    or with ``heads`` = (heads, head_dim) the ``[d0 * d1, heads, head_dim]`` view the KV cache's attention
    reads and writes (the same bytes), so that no VM reshape sits between a block and the attention."""
    if heads is None:
        return (d0, d1, n)
    if int(heads[0]) * int(heads[1]) != n:
        raise ValueError(f"heads {tuple(heads)} do not hold {n} features")
    return (d0 * d1, int(heads[0]), int(heads[1]))


def norm_matmul_func(fmt: str, in_features: int, out_features: int, eps: float,
                     ahead: tuple[str, int, int] | None = None, heads: tuple[int, int] | None = None):
    """The PrimFunc `(x[d0, d1, K], norm_w[K], qweight, next_q, y[d0, d1, N])` of
    `spindle_qblock_norm_matmul`: `y = rmsnorm(x) @ W.T`, the norm folded into the activation quantization
    (one VM call and one parallel region instead of a norm kernel and a matmul). `next_q` is the matrix
    the next VM call starts with, `ahead` = its (fmt, in_features, out_features); each thread asks for the
    head of its half of it as it finishes. Without `ahead`, pass the block's own matrix (not read).
    `heads`: y is shaped `[d0 * d1, heads, head_dim]` instead (`rows_shape`)."""
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel

    load_into_process()
    k, n, code = int(in_features), int(out_features), FORMAT_CODES[fmt]
    row_bytes = act_row_bytes(k)
    qshape, qdtype = _matrix_specs(fmt, n, k)
    ncode, nk, nn, nshape, ndtype = _ahead(ahead, (fmt, k, n))
    i8, i32, f32 = T.type_annotation("int8"), T.type_annotation("int32"), T.type_annotation("float32")

    # pylint: disable=no-member,invalid-name,unused-variable
    @T.prim_func(private=True)
    def func(var_x: T.handle, norm_w: T.Buffer((k,), "float32"), qweight: T.Buffer(qshape, qdtype),
             next_q: T.Buffer(nshape, ndtype), var_y: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tir.noalias": True, "op_pattern": 8})
        d0, d1 = T.int64(), T.int64()
        x = T.match_buffer(var_x, (d0, d1, k), "float32")
        y = T.match_buffer(var_y, rows_shape(d0, d1, n, heads), "float32")
        act = T.decl_buffer((d0 * d1 * row_bytes,), "int8")
        sync = T.decl_buffer((sync_words(2),), "int32")
        for i in range(sync_words(2)):
            sync[i] = 0
        for slot in T.parallel(T.int64(PARALLEL_SLOTS)):
            T.evaluate(T.call_extern(
                "int32", "spindle_qblock_norm_matmul", T.tvm_access_ptr(i32, sync.data, 0, sync_words(2), 3),
                T.Cast("int32", slot * 2 // PARALLEL_SLOTS), d0 * d1,
                T.tvm_access_ptr(f32, x.data, 0, d0 * d1 * k, 1), T.address_of(norm_w[0]), T.float32(eps),
                T.int64(k), T.tvm_access_ptr(i8, act.data, 0, d0 * d1 * row_bytes, 3), code,
                T.address_of(qweight[0, 0, 0]), T.int64(n), T.tvm_access_ptr(f32, y.data, 0, d0 * d1 * n, 2),
                ncode, T.address_of(next_q[0, 0, 0]), T.int64(nk), T.int64(nn)))

    return func


def mlp_block_func(fmts: tuple[str, str, str], attn_features: int, hidden: int, inter: int, eps: float,
                   ahead: tuple[str, int, int] | None = None, link: tuple[str, int, float] | None = None,
                   a_heads: tuple[int, int] | None = None, z_heads: tuple[int, int] | None = None):
    """The PrimFunc of `spindle_qblock_mlp`, what a decoder layer does after its attention:

        (a[d0, d1, A], x[d0, d1, H], o_proj qweight, norm_w[H], gate_up qweight, down qweight, next_q,
         y[d0, d1, H])
        x2 = x + a @ Wo.T;  y = x2 + swiglu(rmsnorm(x2) @ Wgu.T) @ Wd.T

    `fmts` are the formats of o_proj, gate_up_proj and down_proj; gate_up's tiles are interleaved
    (`quantization.interleave_gate_up`); `inter` must be a multiple of 32 (the gate and up columns of one
    group of 32 are computed by one thread, which applies SwiGLU to them and quantizes the group for the
    down projection). `next_q` and `ahead` as for `norm_matmul_func`.

    `link` = (fmt2, out_features2, eps2) adds what the next VM call would start with, in the same parallel
    region: the next layer's input norm and QKV matmul, or the final norm and the output head. The
    PrimFunc then takes `norm2_w[H]` and the matrix `q2` after `down qweight`, and has a second output
    `z[d0, d1, N2] = rmsnorm(y; norm2_w, eps2) @ W2.T`; `ahead` is then the matrix after that (the next
    layer's o_proj), or None.

    `a_heads` / `z_heads`: a / z are shaped `[d0 * d1, heads, head_dim]` (`rows_shape`), as the attention
    writes and reads them. x is read only in the o_proj phase and y written only in the down phase, two
    waits later, so y may be x itself (Relax `call_tir_inplace`), and z any buffer that a, x and the
    weights are not."""
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel
    import tvm  # pylint: disable=import-outside-toplevel

    from ..quantization import gate_up_interleaved  # pylint: disable=import-outside-toplevel

    if not gate_up_interleaved(inter):
        raise ValueError(f"intermediate size {inter} is not a multiple of 32 (gate_up is not stored interleaved)")
    load_into_process()
    a_, h_, i_ = int(attn_features), int(hidden), int(inter)
    fo, fg, fd = (FORMAT_CODES[f] for f in fmts)
    qo, qo_t = _matrix_specs(fmts[0], h_, a_)
    qg, qg_t = _matrix_specs(fmts[1], 2 * i_, h_)
    qd, qd_t = _matrix_specs(fmts[2], h_, i_)
    rb_a, rb_h, rb_i = act_row_bytes(a_), act_row_bytes(h_), act_row_bytes(i_)
    ncode, nk, nn, nshape, ndtype = _ahead(ahead, (fmts[2], i_, h_))
    f2, n2, eps2 = (FORMAT_CODES[link[0]], int(link[1]), float(link[2])) if link else (-1, 0, 0.0)
    q2, q2_t = _matrix_specs(link[0], n2, h_) if link else (qd, qd_t)
    phases = 7 if link else 5
    i8, i32, f32 = T.type_annotation("int8"), T.type_annotation("int32"), T.type_annotation("float32")
    null = tvm.tirx.reinterpret("handle", tvm.tirx.const(0, "uint64"))

    # pylint: disable=no-member,invalid-name,unused-variable,too-many-arguments
    @T.macro
    def block(a, x, o_q, norm_w, g_q, d_q, next_q, y, norm2_ptr, q2_ptr, z_ptr, rows):
        act_a = T.decl_buffer((rows * rb_a,), "int8")
        act_n = T.decl_buffer((rows * rb_h,), "int8")
        act_h = T.decl_buffer((rows * rb_i,), "int8")
        act_2 = T.decl_buffer((rows * rb_h,), "int8")
        x2 = T.decl_buffer((rows * h_,), "float32")
        gu = T.decl_buffer((rows * 2 * i_,), "float32")
        hb = T.decl_buffer((rows * i_,), "float32")
        sync = T.decl_buffer((sync_words(phases),), "int32")
        for i in range(sync_words(phases)):
            sync[i] = 0
        for slot in T.parallel(T.int64(PARALLEL_SLOTS)):
            T.evaluate(T.call_extern(
                "int32", "spindle_qblock_mlp", T.tvm_access_ptr(i32, sync.data, 0, sync_words(phases), 3),
                T.Cast("int32", slot * 2 // PARALLEL_SLOTS), rows,
                T.tvm_access_ptr(f32, a.data, 0, rows * a_, 1), T.int64(a_),
                T.tvm_access_ptr(f32, x.data, 0, rows * h_, 1), T.int64(h_), T.int64(i_),
                fo, T.address_of(o_q[0, 0, 0]), T.address_of(norm_w[0]), T.float32(eps),
                fg, T.address_of(g_q[0, 0, 0]), fd, T.address_of(d_q[0, 0, 0]),
                T.tvm_access_ptr(i8, act_a.data, 0, rows * rb_a, 3),
                T.tvm_access_ptr(i8, act_n.data, 0, rows * rb_h, 3),
                T.tvm_access_ptr(i8, act_h.data, 0, rows * rb_i, 3), T.tvm_access_ptr(f32, x2.data, 0, rows * h_, 3),
                T.tvm_access_ptr(f32, gu.data, 0, rows * 2 * i_, 3), T.tvm_access_ptr(f32, hb.data, 0, rows * i_, 3),
                T.tvm_access_ptr(f32, y.data, 0, rows * h_, 2), norm2_ptr, T.float32(eps2), f2, q2_ptr,
                T.int64(n2), T.tvm_access_ptr(i8, act_2.data, 0, rows * rb_h, 3), z_ptr, ncode,
                T.address_of(next_q[0, 0, 0]), T.int64(nk), T.int64(nn)))

    if link:

        @T.prim_func(private=True)
        def linked(var_a: T.handle, var_x: T.handle, o_q: T.Buffer(qo, qo_t), norm_w: T.Buffer((h_,), "float32"),
                   g_q: T.Buffer(qg, qg_t), d_q: T.Buffer(qd, qd_t), norm2_w: T.Buffer((h_,), "float32"),
                   w2: T.Buffer(q2, q2_t), next_q: T.Buffer(nshape, ndtype), var_y: T.handle, var_z: T.handle):
            T.func_attr({"tirx.is_scheduled": True, "op_pattern": 8})
            d0, d1 = T.int64(), T.int64()
            x = T.match_buffer(var_x, (d0, d1, h_), "float32")
            a = T.match_buffer(var_a, rows_shape(d0, d1, a_, a_heads), "float32")
            y = T.match_buffer(var_y, (d0, d1, h_), "float32")
            z = T.match_buffer(var_z, rows_shape(d0, d1, n2, z_heads), "float32")
            block(a, x, o_q, norm_w, g_q, d_q, next_q, y, T.address_of(norm2_w[0]), T.address_of(w2[0, 0, 0]),
                  T.tvm_access_ptr(f32, z.data, 0, d0 * d1 * n2, 2), d0 * d1)

        return linked

    @T.prim_func(private=True)
    def func(var_a: T.handle, var_x: T.handle, o_q: T.Buffer(qo, qo_t), norm_w: T.Buffer((h_,), "float32"),
             g_q: T.Buffer(qg, qg_t), d_q: T.Buffer(qd, qd_t), next_q: T.Buffer(nshape, ndtype), var_y: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "op_pattern": 8})
        d0, d1 = T.int64(), T.int64()
        x = T.match_buffer(var_x, (d0, d1, h_), "float32")
        a = T.match_buffer(var_a, rows_shape(d0, d1, a_, a_heads), "float32")
        y = T.match_buffer(var_y, (d0, d1, h_), "float32")
        block(a, x, o_q, norm_w, g_q, d_q, next_q, y, null, null, null, d0 * d1)

    return func
