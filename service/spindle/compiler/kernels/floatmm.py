"""Decode matmuls by float32 / float16 weights: `fmatmul.c`, linked into model libraries like the int8 kernels.

`float_matmul_func` builds the TIR PrimFunc a float `Linear` calls in `batch_decode` (and every tied or
untied output head): `y[d0, d1, N] = x[d0, d1, K] @ W[N, K].T (+ res)` in the activations' dtype, with the
threads of one TVM parallel loop taking ranges of 64 columns from a shared counter (`spindle_fmm_sched`).
`SOURCE_DIGEST` makes the compiler fingerprint follow the C source (see `kernels/__init__.py`).
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from pathlib import Path

from . import compile_source

SOURCE = Path(__file__).with_name("fmatmul.c")
SOURCE_DIGEST = "2d752fbbaa414e15923d962b8d527920918ff31806f94b47b558a9ae786a2696"
PARALLEL_SLOTS = 16
DTYPE_CODES = {"float32": 0, "float16": 1}


def source_digest() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


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
