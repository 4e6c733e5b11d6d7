"""The fused decode blocks of the int8 kernels (`spindle_qblock_norm_matmul`, `spindle_qblock_mlp`).

Checked against numpy: the norm and SwiGLU in float64, the matmuls by `quantization.int8_matmul_reference`
(which rounds the activations as the kernels do). The kernels compute the norm and SwiGLU in float32, so an
activation that sits on an int8 rounding boundary could round the other way: the tolerance (1e-4 of the
largest output) is ~100x the measured errors (6e-8 to 1.2e-6). Every thread that calls an entry with the
same `sync` array joins the same computation; the result does not depend on how many threads took part.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest

from spindle.compiler import kernels
from spindle.compiler import quantization as Q

from .test_qkernels import _I64, _load, _ptr

EPS = 1e-5
RTOL = 1e-4
_F32, _I32 = ctypes.c_float, ctypes.c_int32


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    fast, _ = _load(kernels.shared_library(tmp_path_factory.mktemp("qb-auto")), scalar=False)
    scalar, isa = _load(kernels.shared_library(tmp_path_factory.mktemp("qb-scalar")), scalar=True)
    assert isa == 0
    return {"auto": fast, "scalar": scalar}


def _matrix(fmt: str, n: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * rng.uniform(0.02, 0.2, (n, 1))).astype(np.float32)
    rows = Q.quantize(fmt, w)
    tiled = Q.to_tiles(fmt, rows)
    return rows, [tiled["qweight"]]  # the tiles hold the scales (and minimums)


def _rmsnorm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return (x64 / np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + EPS) * w).astype(np.float32)


def _silu_mul(g: np.ndarray, u: np.ndarray) -> np.ndarray:
    g64 = g.astype(np.float64)
    return (g64 / (1.0 + np.exp(-g64)) * u).astype(np.float32)


def _ref(fmt: str, x: np.ndarray, rows_arrays) -> np.ndarray:
    return Q.int8_matmul_reference(fmt, x, rows_arrays).astype(np.float32)


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def _run_threads(fn, threads: int) -> None:
    """``fn(half)`` on ``threads`` threads at once (ctypes calls release the GIL), as a parallel loop would:
    thread i is in half ``i % 2`` of the loop's iterations."""
    start = threading.Barrier(threads)
    errors = []

    def body(half):
        try:
            start.wait()
            fn(half)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=body, args=(i % 2,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors


def _norm_matmul(lib, fmt, x, norm_w, arrays, n, threads=1, ahead=None):
    rows, k = x.shape
    act = np.zeros((rows, kernels.act_row_bytes(k)), np.int8)
    y = np.full((rows, n), np.nan, np.float32)
    sync = np.zeros(kernels.sync_words(2), np.int32)

    def call(half=0):
        lib.spindle_qblock_norm_matmul(_ptr(sync), _I32(half), _I64(rows), _ptr(x), _ptr(norm_w), _F32(EPS), _I64(k), _ptr(act),
                                       _I32(kernels.FORMAT_CODES[fmt]), *[_ptr(a) for a in arrays], _I64(n), _ptr(y),
                                       *(ahead or NO_AHEAD))

    _run_threads(call, threads)
    return y


@pytest.mark.parametrize("which", ["auto", "scalar"])
@pytest.mark.parametrize("fmt", Q.FORMATS)
@pytest.mark.parametrize("rows,k,n", [(1, 64, 100), (3, 96, 48), (8, 576, 960)])
def test_norm_matmul_matches_reference(libs, which, fmt, rows, k, n):
    rng = np.random.default_rng(rows)
    x = (rng.standard_normal((rows, k)) * rng.uniform(0.1, 20.0, (rows, 1))).astype(np.float32)
    norm_w = rng.uniform(0.5, 1.5, k).astype(np.float32)
    rows_arrays, tiled = _matrix(fmt, n, k, seed=3)
    got = _norm_matmul(libs[which], fmt, x, norm_w, tiled, n)
    normed = _rmsnorm(x, norm_w)
    assert _rel(got, _ref(fmt, normed, rows_arrays)) < RTOL
    exact = normed.astype(np.float64) @ Q.dequantize(fmt, rows_arrays).T.astype(np.float64)
    assert _rel(got, exact) < 0.02


NO_AHEAD = (_I32(-1), None, _I64(0), _I64(0))


NO_LINK = (None, _F32(0.0), _I32(-1), None, _I64(0))


def _mlp(lib, fmts, a, x, mats, norm_w, inter, threads=1, sync=None, ahead=NO_AHEAD, link=None, y_into_x=False):
    """The MLP block; with ``link`` = (fmt2, norm2_w, tiled2, n2) the linked block, returning (y, z).
    ``y_into_x``: y is written over (a copy of) x, as decode's in-place calls do."""
    if y_into_x:
        x = x.copy()
    rows, a_dim = a.shape
    h_dim = x.shape[1]
    rb = kernels.act_row_bytes
    act_a, act_n, act_h, act_2 = (np.zeros((rows, rb(d)), np.int8) for d in (a_dim, h_dim, inter, h_dim))
    x2 = np.zeros((rows, h_dim), np.float32)
    gu = np.zeros((rows, 2 * inter), np.float32)
    h = np.zeros((rows, inter), np.float32)
    y = x if y_into_x else np.full((rows, h_dim), np.nan, np.float32)
    z = np.full((rows, link[3] if link else 1), np.nan, np.float32)
    sync = np.zeros(kernels.sync_words(7 if link else 5), np.int32) if sync is None else sync
    codes = [_I32(kernels.FORMAT_CODES[f]) for f in fmts]
    linked = NO_LINK if link is None else (_ptr(link[1]), _F32(EPS), _I32(kernels.FORMAT_CODES[link[0]]),
                                           *[_ptr(m) for m in link[2]], _I64(link[3]))

    def call(half=0):
        lib.spindle_qblock_mlp(
            _ptr(sync), _I32(half), _I64(rows), _ptr(a), _I64(a_dim), _ptr(x), _I64(h_dim), _I64(inter),
            codes[0], *[_ptr(m) for m in mats[0]], _ptr(norm_w), _F32(EPS),
            codes[1], *[_ptr(m) for m in mats[1]], codes[2], *[_ptr(m) for m in mats[2]],
            _ptr(act_a), _ptr(act_n), _ptr(act_h), _ptr(x2), _ptr(gu), _ptr(h), _ptr(y), *linked, _ptr(act_2),
            _ptr(z), *ahead)

    _run_threads(call, threads)
    return ((y, z) if link else y), call


def _mlp_case(fmts, rows, a_dim, h_dim, inter, seed=0):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((rows, a_dim)) * 2.0).astype(np.float32)
    x = (rng.standard_normal((rows, h_dim)) * rng.uniform(0.5, 5.0, (rows, 1))).astype(np.float32)
    norm_w = rng.uniform(0.5, 1.5, h_dim).astype(np.float32)
    o = _matrix(fmts[0], h_dim, a_dim, seed + 1)
    gu_rows, (gu_tiled,) = _matrix(fmts[1], 2 * inter, h_dim, seed + 2)
    gate_up = gu_rows, [Q.interleave_gate_up(gu_tiled)]  # as the weight conversion stores it
    down = _matrix(fmts[2], h_dim, inter, seed + 3)
    return a, x, norm_w, (o, gate_up, down)


def _mlp_reference(fmts, a, x, norm_w, mats, inter):
    (o, _), (gu, _), (down, _) = mats
    x2 = x + _ref(fmts[0], a, o)
    g_u = _ref(fmts[1], _rmsnorm(x2, norm_w), gu)
    h = _silu_mul(g_u[:, :inter], g_u[:, inter:])
    return x2 + _ref(fmts[2], h, down)


FORMAT_MIXES = [("q4_1",) * 3, ("q8_0",) * 3, ("q8_0", "q4_1", "q8_0")]


@pytest.mark.parametrize("which", ["auto", "scalar"])
@pytest.mark.parametrize("fmts", FORMAT_MIXES)
@pytest.mark.parametrize("rows,a_dim,h_dim,inter", [(1, 64, 64, 96), (5, 128, 96, 160), (8, 576, 576, 1536)])
def test_mlp_block_matches_reference(libs, which, fmts, rows, a_dim, h_dim, inter):
    a, x, norm_w, mats = _mlp_case(fmts, rows, a_dim, h_dim, inter)
    got, _ = _mlp(libs[which], fmts, a, x, [m[1] for m in mats], norm_w, inter)
    assert _rel(got, _mlp_reference(fmts, a, x, norm_w, mats, inter)) < RTOL


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_blocks_give_the_same_bits_on_any_number_of_threads(libs, threads):
    """The phases hand out units (rows, column tiles) to whichever thread asks, from either half; which
    thread computes a unit changes nothing in it, so any number of concurrent callers gives the single
    caller's bits."""
    fmts = ("q4_1",) * 3
    a, x, norm_w, mats = _mlp_case(fmts, 8, 576, 576, 1536, seed=5)
    tiled = [m[1] for m in mats]
    one, _ = _mlp(libs["auto"], fmts, a, x, tiled, norm_w, 1536)
    for _ in range(5):
        many, _ = _mlp(libs["auto"], fmts, a, x, tiled, norm_w, 1536, threads=threads)
        np.testing.assert_array_equal(many, one)
    rows_arrays, tiled_qkv = _matrix("q8_0", 960, 576, seed=9)
    single = _norm_matmul(libs["auto"], "q8_0", x, norm_w, tiled_qkv, 960)
    for _ in range(5):
        np.testing.assert_array_equal(_norm_matmul(libs["auto"], "q8_0", x, norm_w, tiled_qkv, 960, threads), single)


def test_the_next_calls_matrix_is_only_prefetched(libs):
    """A block given the matrix the next VM call starts with asks the memory for its head and nothing
    more: the outputs are the same bits as without it, and the matrix is unchanged."""
    fmts = ("q4_1",) * 3
    a, x, norm_w, mats = _mlp_case(fmts, 1, 576, 576, 1536, seed=13)
    tiled = [m[1] for m in mats]
    _, (nxt,) = _matrix("q8_0", 960, 576, seed=14)
    before = nxt.copy()
    ahead = (_I32(kernels.FORMAT_CODES["q8_0"]), _ptr(nxt), _I64(576), _I64(960))
    for threads in (1, 2):
        plain, _ = _mlp(libs["auto"], fmts, a, x, tiled, norm_w, 1536, threads=threads)
        hinted, _ = _mlp(libs["auto"], fmts, a, x, tiled, norm_w, 1536, threads=threads, ahead=ahead)
        np.testing.assert_array_equal(hinted, plain)
        _, (qkv,) = _matrix("q4_1", 960, 576, seed=15)
        plain = _norm_matmul(libs["auto"], "q4_1", x, norm_w, [qkv], 960, threads)
        hinted = _norm_matmul(libs["auto"], "q4_1", x, norm_w, [qkv], 960, threads, ahead=ahead)
        np.testing.assert_array_equal(hinted, plain)
    np.testing.assert_array_equal(nxt, before)


@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize("fmt2", Q.FORMATS)
def test_linked_mlp_block_adds_the_next_norm_matmul(libs, rows, fmt2):
    """The linked block gives the MLP block's bits for y and, in the same call, z = rmsnorm(y) @ W2.T as
    `spindle_qblock_norm_matmul` computes it from y, on one thread or several."""
    fmts = ("q4_1",) * 3
    a, x, norm_w, mats = _mlp_case(fmts, rows, 576, 576, 1536, seed=21)
    tiled = [m[1] for m in mats]
    norm2_w = np.random.default_rng(22).uniform(0.5, 1.5, 576).astype(np.float32)
    _, tiled2 = _matrix(fmt2, 960, 576, seed=23)
    y_plain, _ = _mlp(libs["auto"], fmts, a, x, tiled, norm_w, 1536)
    z_plain = _norm_matmul(libs["auto"], fmt2, y_plain, norm2_w, tiled2, 960)
    for threads in (1, 2, 3):
        (y, z), _ = _mlp(libs["auto"], fmts, a, x, tiled, norm_w, 1536, threads=threads,
                         link=(fmt2, norm2_w, tiled2, 960))
        np.testing.assert_array_equal(y, y_plain)
        np.testing.assert_array_equal(z, z_plain)


@pytest.mark.parametrize("linked", [False, True])
@pytest.mark.parametrize("rows", [1, 5])
def test_y_written_over_x_gives_the_same_bits(libs, linked, rows):
    """Decode calls the MLP block in place (Relax call_tir_inplace): y is x's buffer, and a linked z the
    buffer of the layer's QKV. x is read only before the block's first wait, so y over x gives the bits of
    separate buffers, on one thread or several."""
    fmts = ("q4_1", "q8_0", "q4_1")
    a, x, norm_w, mats = _mlp_case(fmts, rows, 576, 576, 1536, seed=31)
    tiled = [m[1] for m in mats]
    link = ("q8_0", np.random.default_rng(32).uniform(0.5, 1.5, 576).astype(np.float32),
            _matrix("q8_0", 960, 576, seed=33)[1], 960) if linked else None
    want, _ = _mlp(libs["auto"], fmts, a, x, tiled, norm_w, 1536, link=link)
    for threads in (1, 2, 3):
        got, _ = _mlp(libs["auto"], fmts, a, x, tiled, norm_w, 1536, threads=threads, link=link, y_into_x=True)
        for g, w in zip(got if linked else [got], want if linked else [want]):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("linked", [False, True])
def test_a_late_caller_finds_the_work_done(libs, linked):
    """A parallel-loop iteration that starts after the others finished (its thread ran an earlier
    iteration first) takes nothing and returns at once, leaving the outputs as they are."""
    fmts = ("q4_1",) * 3
    a, x, norm_w, mats = _mlp_case(fmts, 2, 64, 64, 96, seed=11)
    link = ("q8_0", norm_w, _matrix("q8_0", 48, 64, seed=12)[1], 48) if linked else None
    sync = np.zeros(kernels.sync_words(7 if linked else 5), np.int32)
    out, call = _mlp(libs["auto"], fmts, a, x, [m[1] for m in mats], norm_w, 96, sync=sync, link=link)
    outs = out if linked else (out,)
    before, counters = [o.copy() for o in outs], sync.copy()
    for o in outs:
        o[:] = -1.0  # a late caller that wrote anything would leave something other than -1 here
    call(1)
    assert all((o == -1.0).all() for o in outs)
    np.testing.assert_array_equal(sync, counters)  # not a counter touched
    assert all(np.isfinite(b).all() for b in before)


def test_swiglu_exp_is_accurate(libs):
    """SwiGLU's vectorised exp (AVX-512) and the portable expf path against float64, across the range
    where silu changes and beyond (|g| up to 100: exp(-g) saturates, silu(g) is g or 0)."""
    g = np.concatenate([np.linspace(-100.0, 100.0, 4080, dtype=np.float32),
                        np.float32([0.0, -0.0, 1e-30, -1e-30, 3.5, -3.5, 88.5, -88.5, 0.5, -0.5, 1e-3, -1e-3,
                                    20.0, -20.0, 7.25, -7.25])])
    u = np.random.default_rng(0).uniform(-2.0, 2.0, g.shape).astype(np.float32)
    want = _silu_mul(g, u)
    for which in ("auto", "scalar"):
        h = np.full_like(g, np.nan)
        libs[which].spindle_swiglu(_ptr(g), _ptr(u), _ptr(h), _I64(len(g)))
        np.testing.assert_allclose(h, want, rtol=3e-6, atol=1e-30)
