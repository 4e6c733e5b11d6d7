"""The fused decode blocks of the float kernel (`spindle_fblock_norm_matmul`, `spindle_fblock_mlp`).

Checked against numpy in float64 that rounds to the blocks' dtype where they round (each norm, matmul
and SwiGLU output). The blocks sum in float32, so a float16 value next to a rounding boundary may round
the other way and carry one float16 step (~5e-4 relative) into what follows: the float16 tolerance is a
few such steps of the largest output, float32's that of float32 sums of up to 1536 terms. Every thread
that calls an entry with the same `sync` array joins the same computation; the result does not depend on
how many threads took part.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from spindle.compiler import kernels
from spindle.compiler.kernels import floatmm

from .test_fkernels import _load
from .test_qblocks import _run_threads

EPS = 1e-5
TOL = {"float32": 1e-5, "float16": 4e-3}
_P, _I64, _I32, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_float


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    fast, _ = _load(floatmm.shared_library(tmp_path_factory.mktemp("fb-auto")), scalar=False)
    slow, isa = _load(floatmm.shared_library(tmp_path_factory.mktemp("fb-scalar")), scalar=True)
    assert isa == 0
    return {"auto": fast, "scalar": slow}


def _p(a: np.ndarray | None):
    return None if a is None else _P(a.ctypes.data)


def _round(v: np.ndarray, dtype: str) -> np.ndarray:
    return v.astype(dtype).astype(np.float64)


def _rmsnorm(x: np.ndarray, w: np.ndarray, dtype: str) -> np.ndarray:
    x64 = x.astype(np.float64)
    return _round(x64 / np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + EPS) * w.astype(np.float64), dtype)


def _mm(x: np.ndarray, w: np.ndarray, dtype: str, res: np.ndarray | None = None) -> np.ndarray:
    y = x.astype(np.float64) @ w.astype(np.float64).T
    return _round(y if res is None else y + res.astype(np.float64), dtype)


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


def _rand(rng, shape, scale, dtype):
    return (rng.standard_normal(shape) * scale).astype(dtype)


NO_AHEAD = (_I32(0), None, _I64(0), _I64(0))
NO_LINK = (None, _F32(0.0), None, _I64(0), None)


def _norm_matmul(lib, dtype, x, norm_w, w, threads=1, ahead=NO_AHEAD):
    rows, k = x.shape
    n = w.shape[0]
    xn = np.zeros_like(x)
    y = np.full((rows, n), np.nan, dtype)
    sync = np.zeros(kernels.sync_words(2), np.int32)

    def call(half=0):
        lib.spindle_fblock_norm_matmul(_p(sync), _I32(half), _I64(rows), _p(x), _p(norm_w), _F32(EPS), _I64(k),
                                       _p(xn), _p(w), _I64(n), _p(y), _I32(floatmm.DTYPE_CODES[dtype]), *ahead)

    _run_threads(call, threads)
    return y


def _mlp(lib, dtype, case, threads=1, sync=None, ahead=NO_AHEAD, link=None, y_into_x=False):
    """The MLP block; with ``link`` = (norm2_w, w2) the linked block, returning (y, z). ``y_into_x``: y is
    written over (a copy of) x, as decode's in-place calls do."""
    a, x, norm_w, wo, wg, wd = case
    if y_into_x:
        x = x.copy()
    rows, a_dim = a.shape
    h_dim, inter = x.shape[1], wd.shape[1]
    xn, x2 = np.zeros_like(x), np.zeros_like(x)
    gu = np.zeros((rows, 2 * inter), dtype)
    h = np.zeros((rows, inter), dtype)
    y = x if y_into_x else np.full((rows, h_dim), np.nan, dtype)
    z = np.full((rows, link[1].shape[0] if link else 1), np.nan, dtype)  # kept alive until the calls end
    sync = np.zeros(kernels.sync_words(6 if link else 4), np.int32) if sync is None else sync
    linked = NO_LINK if link is None else (_p(link[0]), _F32(EPS), _p(link[1]), _I64(link[1].shape[0]), _p(z))

    def call(half=0):
        lib.spindle_fblock_mlp(_p(sync), _I32(half), _I64(rows), _p(a), _I64(a_dim), _p(x), _I64(h_dim),
                               _I64(inter), _p(wo), _p(norm_w), _F32(EPS), _p(wg), _p(wd), _p(xn), _p(x2), _p(gu),
                               _p(h), _p(y), *linked, _I32(floatmm.DTYPE_CODES[dtype]), *ahead)

    _run_threads(call, threads)
    return ((y, z) if link else y), call


def _mlp_case(dtype, rows, a_dim, h_dim, inter, seed=0):
    rng = np.random.default_rng(seed)
    a = _rand(rng, (rows, a_dim), 2.0, dtype)
    x = (rng.standard_normal((rows, h_dim)) * rng.uniform(0.5, 5.0, (rows, 1))).astype(dtype)
    norm_w = rng.uniform(0.5, 1.5, h_dim).astype(dtype)
    wo = _rand(rng, (h_dim, a_dim), 0.05, dtype)
    wg = _rand(rng, (2 * inter, h_dim), 0.1, dtype)
    wd = _rand(rng, (h_dim, inter), 0.05, dtype)
    return a, x, norm_w, wo, wg, wd


def _mlp_reference(dtype, case):
    a, x, norm_w, wo, wg, wd = case
    inter = wd.shape[1]
    x2 = _mm(a, wo, dtype, res=x)
    g_u = _mm(_rmsnorm(x2, norm_w, dtype), wg, dtype)
    g, u = g_u[:, :inter], g_u[:, inter:]
    h = _round(g / (1.0 + np.exp(-g)) * u, dtype)
    return _mm(h, wd, dtype, res=x2)


DTYPES = ["float32", "float16"]


@pytest.mark.parametrize("which", ["auto", "scalar"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,k,n", [(1, 64, 100), (3, 96, 47), (8, 576, 960)])
def test_norm_matmul_matches_reference(libs, which, dtype, rows, k, n):
    rng = np.random.default_rng(rows)
    x = (rng.standard_normal((rows, k)) * rng.uniform(0.1, 20.0, (rows, 1))).astype(dtype)
    norm_w = rng.uniform(0.5, 1.5, k).astype(dtype)
    w = _rand(rng, (n, k), 0.1, dtype)
    got = _norm_matmul(libs[which], dtype, x, norm_w, w)
    assert _rel(got, _mm(_rmsnorm(x, norm_w, dtype), w, dtype)) < TOL[dtype]


@pytest.mark.parametrize("which", ["auto", "scalar"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,a_dim,h_dim,inter", [(1, 64, 64, 96), (5, 128, 96, 150), (1, 576, 576, 1536),
                                                    (8, 576, 576, 1536)])
def test_mlp_block_matches_reference(libs, which, dtype, rows, a_dim, h_dim, inter):
    """Sizes that are not multiples of the 16-column units (150) take partial units at the end."""
    case = _mlp_case(dtype, rows, a_dim, h_dim, inter)
    got, _ = _mlp(libs[which], dtype, case)
    assert _rel(got, _mlp_reference(dtype, case)) < TOL[dtype]


@pytest.mark.parametrize("threads", [2, 3, 5])
@pytest.mark.parametrize("rows", [1, 8])
def test_blocks_give_the_same_bits_on_any_number_of_threads(libs, threads, rows):
    """Which thread computes a unit (a row's norm, 16 columns) changes nothing in it: any number of
    concurrent callers gives the single caller's bits, with one row (each caller norms it on its own) and
    with several (a shared norm phase)."""
    case = _mlp_case("float16", rows, 576, 576, 1536, seed=5)
    one, _ = _mlp(libs["auto"], "float16", case)
    for _ in range(5):
        np.testing.assert_array_equal(_mlp(libs["auto"], "float16", case, threads=threads)[0], one)
    x, norm_w = case[1], case[2]
    w = _rand(np.random.default_rng(9), (960, 576), 0.1, "float16")
    single = _norm_matmul(libs["auto"], "float16", x, norm_w, w)
    for _ in range(5):
        np.testing.assert_array_equal(_norm_matmul(libs["auto"], "float16", x, norm_w, w, threads), single)


def _link_case(dtype, h_dim, n2, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, h_dim).astype(dtype), _rand(rng, (n2, h_dim), 0.1, dtype)


@pytest.mark.parametrize("which", ["auto", "scalar"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 4])
def test_linked_mlp_block_adds_the_next_norm_matmul(libs, which, dtype, rows):
    """The linked block gives the MLP block's bits for y and, in the same call, z = rmsnorm(y) @ W2.T as
    `spindle_fblock_norm_matmul` computes it from y, on one thread or several."""
    case = _mlp_case(dtype, rows, 576, 576, 1536, seed=21)
    link = _link_case(dtype, 576, 960, seed=22)
    y_plain, _ = _mlp(libs[which], dtype, case)
    z_plain = _norm_matmul(libs[which], dtype, y_plain, *link)
    for threads in (1, 2, 3):
        (y, z), _ = _mlp(libs[which], dtype, case, threads=threads, link=link)
        np.testing.assert_array_equal(y, y_plain)
        np.testing.assert_array_equal(z, z_plain)
    assert _rel(z_plain, _mm(_rmsnorm(_mlp_reference(dtype, case), link[0], dtype), link[1], dtype)) < 2 * TOL[dtype]


@pytest.mark.parametrize("linked", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 5])
def test_y_written_over_x_gives_the_same_bits(libs, linked, dtype, rows):
    """Decode calls the MLP block in place (Relax call_tir_inplace): y is x's buffer, and a linked z the
    buffer of the layer's QKV. x is read only before the block's first wait, so y over x gives the bits of
    separate buffers, on one thread or several."""
    case = _mlp_case(dtype, rows, 576, 576, 1536, seed=41)
    link = _link_case(dtype, 576, 960, seed=42) if linked else None
    want, _ = _mlp(libs["auto"], dtype, case, link=link)
    for threads in (1, 2, 3):
        got, _ = _mlp(libs["auto"], dtype, case, threads=threads, link=link, y_into_x=True)
        for g, w in zip(got if linked else [got], want if linked else [want]):
            np.testing.assert_array_equal(g, w)


def test_the_next_calls_matrix_is_only_prefetched(libs):
    """A block given the matrix the next VM call starts with asks the memory for its head and nothing
    more: the outputs are the same bits as without it, and the matrix is unchanged."""
    case = _mlp_case("float32", 1, 576, 576, 1536, seed=13)
    nxt = _rand(np.random.default_rng(14), (960, 576), 0.1, "float32")
    before = nxt.copy()
    ahead = (_I32(1), _p(nxt), _I64(576), _I64(960))
    for threads in (1, 2):
        plain, _ = _mlp(libs["auto"], "float32", case, threads=threads)
        np.testing.assert_array_equal(_mlp(libs["auto"], "float32", case, threads=threads, ahead=ahead)[0], plain)
        w = _rand(np.random.default_rng(15), (960, 576), 0.1, "float32")
        plain = _norm_matmul(libs["auto"], "float32", case[1], case[2], w, threads)
        hinted = _norm_matmul(libs["auto"], "float32", case[1], case[2], w, threads, ahead=ahead)
        np.testing.assert_array_equal(hinted, plain)
    np.testing.assert_array_equal(nxt, before)


@pytest.mark.parametrize("linked", [False, True])
def test_a_late_caller_finds_the_work_done(libs, linked):
    """A parallel-loop iteration that starts after the others finished takes nothing and returns at once,
    leaving the outputs and the counters as they are."""
    case = _mlp_case("float16", 2, 64, 64, 96, seed=11)
    link = _link_case("float16", 64, 48, seed=12) if linked else None
    sync = np.zeros(kernels.sync_words(6 if linked else 4), np.int32)
    out, call = _mlp(libs["auto"], "float16", case, sync=sync, link=link)
    outs = out if linked else (out,)
    before, counters = [o.copy() for o in outs], sync.copy()
    for o in outs:
        o[:] = -1.0  # a late caller that wrote anything would leave something other than -1 here
    call(1)
    assert all((o == -1.0).all() for o in outs)
    np.testing.assert_array_equal(sync, counters)
    assert all(np.isfinite(b.astype(np.float32)).all() for b in before)
