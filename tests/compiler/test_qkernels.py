"""The integer-dot q4_1 / q8_0 matmul kernels (spindle/compiler/kernels) against numpy references.

The reference (`quantization.int8_matmul_reference`) quantizes the activations exactly as the kernels do
(bit-identical int8 values and float32 scales: checked directly below) and sums in float64, so the only
difference left is the kernels' float32 accumulation: tolerance 1e-5 of the largest output (measured
~1e-7 to 4e-7).
"""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest
import tvm

from spindle.compiler import kernels
from spindle.compiler import quantization as Q
from spindle.compiler.build import make_target

ROWS = (1, 2, 3, 4, 5, 8, 17)
# (K, N): K a multiple of 32 (tails of 32/64/96 after chunks of 128 weights), N not a multiple of the tile.
SHAPES = ((768, 100), (2048, 72), (576, 1537), (1536, 50), (96, 20))
RTOL = 1e-5

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(_PTR)


def _load(path, scalar: bool):
    """Loads a copy of the kernels (its own dispatch state); `scalar` forces the portable implementation."""
    old = os.environ.get("SPINDLE_QKERNEL")
    os.environ["SPINDLE_QKERNEL"] = "scalar" if scalar else "auto"
    try:
        lib = ctypes.CDLL(str(path))
        lib.spindle_qkernel_isa.restype = ctypes.c_int32
        isa = lib.spindle_qkernel_isa()  # the choice is made (and fixed) at the first call
    finally:
        if old is None:
            del os.environ["SPINDLE_QKERNEL"]
        else:
            os.environ["SPINDLE_QKERNEL"] = old
    return lib, isa


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    fast, fast_isa = _load(kernels.shared_library(tmp_path_factory.mktemp("qk-auto")), scalar=False)
    scalar, scalar_isa = _load(kernels.shared_library(tmp_path_factory.mktemp("qk-scalar")), scalar=True)
    assert scalar_isa == 0
    return {"auto": fast, "scalar": scalar, "auto_isa": fast_isa}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """fmt, K, N -> the PrimFunc `int8_matmul_func` built and exported with the kernels linked in."""
    target, cache, root = make_target("llvm"), {}, tmp_path_factory.mktemp("qk-tir")

    def get(fmt: str, k: int, n: int):
        if (fmt, k, n) not in cache:
            func = kernels.int8_matmul_func(fmt, k, n).with_attr("global_symbol", "main")
            lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
            path = root / f"{fmt}_{k}_{n}.so"
            lib.export_library(str(path), addons=[kernels.object_file()])
            cache[fmt, k, n] = tvm.runtime.load_module(str(path))["main"]
        return cache[fmt, k, n]

    return get


def _weights(fmt: str, k: int, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return Q.quantize(fmt, (rng.standard_normal((n, k)) * rng.uniform(0.1, 2.0, (n, 1))).astype(np.float32))


def _activations(rows: int, k: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, k)).astype(np.float32) * rng.uniform(0.01, 10.0, (rows, 1)).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero group: scale 0
    return x


def _names(fmt: str) -> list[str]:
    return list(Q.tiled_specs(fmt, 16, 32))  # q4_1 tiles hold their scales and minimums


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("fmt", Q.FORMATS)
@pytest.mark.parametrize("k,n", SHAPES)
def test_compiled_kernel_matches_reference(compiled, fmt, k, n):
    fn, arrays = compiled(fmt, k, n), _weights(fmt, k, n)
    tiled = Q.to_tiles(fmt, arrays)
    weights = [tvm.runtime.tensor(tiled[a]) for a in _names(fmt)]
    # 70 rows: the activation rows are quantized in parallel from kernels.PARALLEL_QUANTIZE_ROWS on
    for rows in ROWS + ((70,) if k == 768 else ()):
        x = _activations(rows, k)
        lead = (rows, 1) if rows % 2 else (1, rows)  # decode [batch, 1, K] and prefill [1, seq, K] views
        y = tvm.runtime.empty((*lead, n), "float32")
        fn(tvm.runtime.tensor(x.reshape(*lead, k)), *weights, y)
        got = y.numpy().reshape(rows, n)
        want = Q.int8_matmul_reference(fmt, x, arrays)
        assert _rel(got, want) < RTOL, (rows, _rel(got, want))
        # and the rounding of the activations is the only approximation: near the float matmul
        exact = x.astype(np.float64) @ Q.dequantize(fmt, arrays).T.astype(np.float64)
        assert _rel(got, exact) < 0.02


def _act_scratch(lib, x: np.ndarray, fmt: str) -> np.ndarray:
    rows, k = x.shape
    stride = kernels.act_row_bytes(k)
    scratch = np.zeros((rows, stride), np.int8)
    for r in range(rows):
        row = np.ascontiguousarray(x[r])
        lib.spindle_qact_quantize(_ptr(row), _I64(k), _ptr(scratch[r]), ctypes.c_int32(kernels.FORMAT_CODES[fmt]))
    return scratch


@pytest.mark.parametrize("k", [96, 576, 768])
def test_activation_quantization_is_bit_identical(libs, k):
    """Both implementations write exactly the numpy reference's int8 values, scales and sums."""
    x = _activations(5, k)
    q, d, s = Q.quantize_activations(x)
    groups = k // 32
    for fmt, which in ((f, w) for f in Q.FORMATS for w in ("auto", "scalar")):
        scratch = _act_scratch(libs[which], x, fmt)
        np.testing.assert_array_equal(scratch[:, :k], q)  # in order for both formats
        floats = scratch[:, k:k + 8 * groups].copy().view(np.float32)
        np.testing.assert_array_equal(floats[:, :groups], d)
        np.testing.assert_array_equal(floats[:, groups:], s)


def _tile(lib, fmt: str, scratch: np.ndarray, arrays, k: int, n: int, n0: int, n1: int,
          residual: np.ndarray | None = None) -> np.ndarray:
    """The C kernel on columns [n0, n1) of the row-layout `arrays` (tiled here)."""
    rows = scratch.shape[0]
    y = np.full((rows, n), np.nan, np.float32)
    tiled = Q.to_tiles(fmt, arrays)
    ptrs = [_ptr(tiled[a]) for a in _names(fmt)]
    fn = lib.spindle_qmm_q4_1 if fmt == "q4_1" else lib.spindle_qmm_q8_0
    res = None if residual is None else _ptr(residual)  # None: a NULL pointer, no residual
    fn(_ptr(scratch), _I64(scratch.shape[1]), _I64(rows), *ptrs, _I64(k), _I64(n0), _I64(n1), _ptr(y), res,
       _I64(n))
    return y


def _residual(rows: int, n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, n)) * rng.uniform(0.1, 30.0, (rows, 1))).astype(np.float32)


@pytest.mark.parametrize("fmt", Q.FORMATS)
@pytest.mark.parametrize("k,n", [(768, 40), (2048, 19), (576, 33), (1536, 21)])
def test_scalar_and_vector_paths_agree(libs, fmt, k, n):
    """SPINDLE_QKERNEL=scalar (the portable C) gives the vector path's results, and a column range
    [n0, n1) writes exactly those columns."""
    arrays = _weights(fmt, k, n, seed=3)
    for rows in ROWS:
        x = _activations(rows, k, seed=rows)
        want = Q.int8_matmul_reference(fmt, x, arrays)
        scratch = _act_scratch(libs["auto"], x, fmt)
        fast = _tile(libs["auto"], fmt, scratch, arrays, k, n, 0, n)
        slow = _tile(libs["scalar"], fmt, scratch, arrays, k, n, 0, n)
        assert _rel(fast, want) < RTOL and _rel(slow, want) < RTOL
        assert _rel(slow, fast) < RTOL
        part = _tile(libs["auto"], fmt, scratch, arrays, k, n, 5, 13)
        assert np.isnan(part[:, :5]).all() and np.isnan(part[:, 13:]).all()
        np.testing.assert_array_equal(part[:, 5:13], fast[:, 5:13])


@pytest.mark.parametrize("which", ["auto", "scalar"])
@pytest.mark.parametrize("fmt", Q.FORMATS)
@pytest.mark.parametrize("k,n", [(768, 40), (576, 33), (96, 21)])
def test_residual_is_added_exactly(libs, which, fmt, k, n):
    """A residual pointer gives bit for bit the kernel's output without it plus the residual (one float32
    add, as the separate elementwise kernel did), on both implementations; a column range adds only there."""
    lib, arrays = libs[which], _weights(fmt, k, n, seed=5)
    for rows in (1, 4, 8, 17):
        x = _activations(rows, k, seed=rows + 100)
        scratch = _act_scratch(lib, x, fmt)
        res = _residual(rows, n, seed=rows)
        plain = _tile(lib, fmt, scratch, arrays, k, n, 0, n)
        fused = _tile(lib, fmt, scratch, arrays, k, n, 0, n, residual=res)
        assert np.array_equal(fused, plain + res), (rows, np.abs(fused - (plain + res)).max())
        assert not np.array_equal(fused, plain)
        part = _tile(lib, fmt, scratch, arrays, k, n, 3, 20, residual=res)
        assert np.isnan(part[:, :3]).all() and np.isnan(part[:, 20:]).all()
        assert np.array_equal(part[:, 3:20], (plain + res)[:, 3:20])


@pytest.mark.parametrize("fmt", Q.FORMATS)
def test_compiled_kernel_with_residual(tmp_path, fmt):
    """The PrimFunc with a residual input: exactly the PrimFunc without one plus the residual."""
    k, n, target = 576, 50, make_target("llvm")
    fns = {}
    for residual in (False, True):
        func = kernels.int8_matmul_func(fmt, k, n, residual=residual).with_attr("global_symbol", "main")
        path = tmp_path / f"{fmt}_{residual}.so"
        tvm.compile(tvm.IRModule({"main": func}), target=target).export_library(
            str(path), addons=[kernels.object_file()])
        fns[residual] = tvm.runtime.load_module(str(path))["main"]
    tiled = Q.to_tiles(fmt, _weights(fmt, k, n, seed=9))
    weights = [tvm.runtime.tensor(tiled[a]) for a in _names(fmt)]
    for rows in (1, 4, 8, 17, 70):
        lead = (rows, 1) if rows % 2 else (1, rows)
        x = tvm.runtime.tensor(_activations(rows, k, seed=rows).reshape(*lead, k))
        res = _residual(rows, n, seed=rows).reshape(*lead, n)
        plain, fused = tvm.runtime.empty((*lead, n), "float32"), tvm.runtime.empty((*lead, n), "float32")
        fns[False](x, *weights, plain)
        fns[True](x, *weights, tvm.runtime.tensor(res), fused)
        assert np.array_equal(fused.numpy(), plain.numpy() + res), rows


def test_vector_path_is_used_where_supported(libs):
    flags = open("/proc/cpuinfo", encoding="utf-8").read() if os.path.exists("/proc/cpuinfo") else ""
    supported = "avx512_vnni" in flags and "avx512bw" in flags and "avx512vl" in flags
    assert libs["auto_isa"] == int(supported)
    assert kernels.vector_supported() == supported


def test_source_digest_is_current():
    """The C source is covered by the compiler fingerprint through `SOURCE_DIGEST` (a .py constant)."""
    assert kernels.SOURCE_DIGEST == kernels.source_digest()


def test_kernel_choice_errors(monkeypatch):
    with pytest.raises(Q.QuantizationError, match="kernel"):
        Q.QuantizedLinear(64, 64, "q4_1", kernel="fast")
    monkeypatch.setenv("SPINDLE_QMATMUL", "fast")
    with pytest.raises(Q.QuantizationError, match="SPINDLE_QMATMUL"):
        Q.resolve_kernel()
    monkeypatch.setenv("SPINDLE_QMATMUL", "float")
    assert Q.resolve_kernel() == "float" and Q.resolve_kernel("int8") == "int8"
    monkeypatch.delenv("SPINDLE_QMATMUL")
    assert Q.resolve_kernel() == ("int8" if kernels.vector_supported() else "float")


def test_gpu_models_keep_the_float_kernel():
    """A model exported for a GPU target gets the float kernel (the C kernels run on the host only)."""
    from tvm.relax.frontend import nn

    class Holder(nn.Module):
        def __init__(self, target):
            self.target = tvm.target.Target(target)

        def choose(self):
            return Q.resolve_kernel()

    assert Holder("cuda").choose() == "float"
    assert Holder("llvm").choose() == ("int8" if kernels.vector_supported() else "float")
