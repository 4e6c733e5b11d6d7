"""The float32 / float16 decode matmul kernels (spindle/compiler/kernels/fmatmul.c) against numpy."""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest
import tvm

from spindle.compiler.build import make_target
from spindle.compiler.kernels import floatmm

_P, _I64, _I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
TOL = {"float32": 1e-5, "float16": 2e-3}  # relative to the largest output (float32 sums of up to 1536 terms; float16 rounds the output once)


def _load(path, scalar: bool):
    old = os.environ.get("SPINDLE_QKERNEL")
    os.environ["SPINDLE_QKERNEL"] = "scalar" if scalar else "auto"
    try:
        lib = ctypes.CDLL(str(path))
        lib.spindle_fkernel_isa.restype = ctypes.c_int32
        isa = lib.spindle_fkernel_isa()
    finally:
        if old is None:
            del os.environ["SPINDLE_QKERNEL"]
        else:
            os.environ["SPINDLE_QKERNEL"] = old
    lib.spindle_fmm.argtypes = [_P, _I64, _P, _I64, _I64, _I64, _P, _P, _I64, _I32, _I32]
    return lib, isa


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    fast, fast_isa = _load(floatmm.shared_library(tmp_path_factory.mktemp("fk-auto")), scalar=False)
    slow, slow_isa = _load(floatmm.shared_library(tmp_path_factory.mktemp("fk-scalar")), scalar=True)
    assert slow_isa == 0
    return {"auto": fast, "scalar": slow, "auto_isa": fast_isa}


def _case(dtype: str, rows: int, k: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * rng.uniform(0.1, 2.0, (n, 1))).astype(dtype)
    x = (rng.standard_normal((rows, k)) * rng.uniform(0.1, 5.0, (rows, 1))).astype(dtype)
    res = rng.standard_normal((rows, n)).astype(dtype)
    return w, x, res


def _rel(got, want) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


@pytest.mark.parametrize("which", ["auto", "scalar"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("k,n", [(576, 64), (20, 7), (1536, 37), (33, 100)])
def test_kernel_matches_numpy(libs, which, dtype, k, n):
    """Rows 1..17, K not a multiple of 16, N not a multiple of 4, with and without a residual, and a
    column range [n0, n1) that writes only those columns."""
    lib, code = libs[which], floatmm.DTYPE_CODES[dtype]
    for rows in (1, 2, 3, 5, 8, 17):
        w, x, res = _case(dtype, rows, k, n, seed=rows + k)
        want = x.astype(np.float64) @ w.astype(np.float64).T
        for r in (None, res):
            y = np.full((rows, n), np.nan, dtype)
            lib.spindle_fmm(x.ctypes.data, rows, w.ctypes.data, k, 0, n, y.ctypes.data,
                            None if r is None else r.ctypes.data, n, code, code)
            expect = want if r is None else want + r.astype(np.float64)
            assert _rel(y, expect) < TOL[dtype], (rows, _rel(y, expect))
        y = np.full((rows, n), np.nan, dtype)
        lib.spindle_fmm(x.ctypes.data, rows, w.ctypes.data, k, 2, n - 1, y.ctypes.data, None, n, code, code)
        assert np.isnan(y[:, :2]).all() and np.isnan(y[:, n - 1:]).all()
        assert _rel(y[:, 2:n - 1], want[:, 2:n - 1]) < TOL[dtype]


def test_vector_path_is_used_where_supported(libs):
    flags = open("/proc/cpuinfo", encoding="utf-8").read() if os.path.exists("/proc/cpuinfo") else ""
    assert libs["auto_isa"] == int("avx512f" in flags and "avx512bw" in flags and "avx512vl" in flags)


def test_source_digest_is_current():
    assert floatmm.SOURCE_DIGEST == floatmm.source_digest()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("residual", [False, True])
def test_compiled_primfunc(tmp_path, dtype, residual):
    """The PrimFunc the model calls, exported with the kernels linked in, on decode and prefill views."""
    k, n = 96, 75
    func = floatmm.float_matmul_func(k, n, dtype, dtype, residual=residual).with_attr("global_symbol", "main")
    path = tmp_path / "fmm.so"
    tvm.compile(tvm.IRModule({"main": func}), target=make_target("llvm")).export_library(
        str(path), addons=[floatmm.object_file()])
    fn = tvm.runtime.load_module(str(path))["main"]
    for rows in (1, 4, 9):
        w, x, res = _case(dtype, rows, k, n, seed=rows)
        lead = (rows, 1) if rows % 2 else (1, rows)
        y = tvm.runtime.empty((*lead, n), dtype)
        args = [tvm.runtime.tensor(x.reshape(*lead, k)), tvm.runtime.tensor(w)]
        if residual:
            args.append(tvm.runtime.tensor(res.reshape(*lead, n)))
        fn(*args, y)
        want = x.astype(np.float64) @ w.astype(np.float64).T + (res.astype(np.float64) if residual else 0)
        assert _rel(y.numpy().reshape(rows, n), want) < TOL[dtype]
