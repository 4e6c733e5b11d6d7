"""GGUF block formats: numpy conversions against gguf.quants, and the compiled QuantizedLinear."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from gguf import GGMLQuantizationType, quants
from hypothesis import given, settings, strategies as st
from tvm import relax
from tvm.relax.frontend import nn

from spindle.compiler import quantization as Q
from spindle.compiler.schedules import cpu_pipeline

QTYPE = {"q8_0": GGMLQuantizationType.Q8_0, "q4_1": GGMLQuantizationType.Q4_1}


def _random_blocks(fmt: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Arbitrary GGUF block bytes with finite fp16 scales and minimums (every code value occurs)."""
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    raw = quants.quantize(w, QTYPE[fmt]).copy()
    block = {"q8_0": 34, "q4_1": 20}[fmt]
    view = raw.reshape(rows, cols // 32, block)
    header = 2 if fmt == "q8_0" else 4
    view[:, :, header:] = rng.integers(0, 256, size=view[:, :, header:].shape, dtype=np.uint8)
    return raw


@pytest.mark.parametrize("fmt", Q.FORMATS)
@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 9), groups=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_quantize_matches_gguf(fmt, rows, groups, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, groups * 32)) * rng.uniform(0.01, 10)).astype(np.float32)
    arrays = Q.quantize(fmt, w)
    raw = quants.quantize(w, QTYPE[fmt])
    np.testing.assert_array_equal(Q.dequantize(fmt, arrays), quants.dequantize(raw, QTYPE[fmt]))
    np.testing.assert_array_equal(Q.to_gguf_blocks(fmt, arrays), raw)
    for name, (shape, dtype) in Q.array_specs(fmt, rows, groups * 32).items():
        assert arrays[name].shape == shape and str(arrays[name].dtype) == dtype
    # Quantization error is bounded by half a step (q8_0: d/2 with d = amax/127; q4_1: d/2 + fp16 rounding).
    blocks = w.reshape(rows, groups, 32)
    step = np.abs(blocks).max(-1) / 127 if fmt == "q8_0" else (blocks.max(-1) - blocks.min(-1)) / 15
    err = np.abs(Q.dequantize(fmt, arrays) - w).reshape(rows, groups, 32).max(-1)
    assert np.all(err <= step * 0.51 + np.abs(blocks).max(-1) * 2e-3 + 1e-6)


@pytest.mark.parametrize("fmt", Q.FORMATS)
def test_from_gguf_blocks_is_exact(fmt):
    rng = np.random.default_rng(0)
    raw = _random_blocks(fmt, 7, 96, rng)
    arrays = Q.from_gguf_blocks(fmt, raw, (7, 96))
    np.testing.assert_array_equal(Q.dequantize(fmt, arrays), quants.dequantize(raw, QTYPE[fmt]))
    np.testing.assert_array_equal(Q.to_gguf_blocks(fmt, arrays), raw)
    # The reader may hand over the bytes flat or as [rows, bytes per row].
    flat = Q.from_gguf_blocks(fmt, raw.reshape(-1), (7, 96))
    for name in arrays:
        np.testing.assert_array_equal(flat[name], arrays[name])


def test_q4_1_nibble_order():
    # One block: codes 0..15 in the low nibbles (weights 0..15), 15..0 in the high ones (weights 16..31).
    d, m = np.float16(0.5), np.float16(-1.0)
    qs = (np.arange(16, dtype=np.uint8) | ((15 - np.arange(16, dtype=np.uint8)) << 4)).astype(np.uint8)
    raw = np.concatenate([np.array([d]).view(np.uint8), np.array([m]).view(np.uint8), qs])
    w = Q.dequantize("q4_1", Q.from_gguf_blocks("q4_1", raw, (1, 32)))[0]
    expected = np.concatenate([np.arange(16), 15 - np.arange(16)]) * 0.5 - 1.0
    np.testing.assert_array_equal(w, expected.astype(np.float32))


def test_pack_unpack_nibbles():
    codes = np.random.default_rng(1).integers(0, 16, size=(3, 64), dtype=np.uint8)
    packed = Q.pack_nibbles(codes)
    assert packed.dtype == np.uint32 and packed.shape == (3, 8)
    assert packed[0, 0] & 0xF == codes[0, 0] and (packed[0, 0] >> 28) == codes[0, 7]
    np.testing.assert_array_equal(Q.unpack_nibbles(packed), codes)


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda: Q.quantize("q4_0", np.zeros((2, 32), np.float32)), "fmt"),
        (lambda: Q.quantize("q8_0", np.zeros((2, 33), np.float32)), "w"),
        (lambda: Q.quantize("q8_0", np.zeros((64,), np.float32)), "w"),
        (lambda: Q.quantize("q8_0", np.full((1, 32), np.nan, np.float32)), "w"),
        (lambda: Q.from_gguf_blocks("q4_1", np.zeros(39, np.uint8), (1, 64)), "raw"),
        (lambda: Q.from_gguf_blocks("q4_1", np.zeros(20, np.int8), (1, 32)), "raw"),
        (lambda: Q.from_gguf_blocks("q8_0", np.zeros(34, np.uint8), (1, 30)), "shape"),
        (lambda: Q.from_gguf_blocks("q8_0", np.zeros(34, np.uint8), (1,)), "shape"),
        (lambda: Q.dequantize("q4_1", {"qweight": np.zeros((1, 4), np.uint32),
                                       "scales": np.zeros((1, 1), np.float16)}), "arrays['mins']"),
        (lambda: Q.dequantize("q8_0", {"qweight": np.zeros((1, 32), np.int8),
                                       "scales": np.zeros((1, 1), np.float32)}), "arrays['scales']"),
        (lambda: Q.QuantizedLinear(32, 4, "q8_0", out_dtype="int8"), "out_dtype"),
    ],
)
def test_bad_input_names_the_field(call, field):
    with pytest.raises(Q.QuantizationError) as info:
        call()
    assert info.value.field == field
    assert field in str(info.value)


def _build(module: nn.Module, spec: dict):
    packed = {"$": {"param_mode": "packed", "effect_mode": "none"}}
    mod, named = module.export_tvm(spec={k: {**v, **packed} for k, v in spec.items()})
    target = tvm.target.Target({"kind": "llvm"})
    vm = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=cpu_pipeline(target)), tvm.cpu())
    return vm, [name for name, _ in named]


@pytest.mark.parametrize("fmt", Q.FORMATS)
@pytest.mark.parametrize("bias, out_dtype", [(False, "float32"), (True, "float16")])
@pytest.mark.parametrize("kernel", Q.KERNELS)
def test_compiled_quantized_linear_matches_numpy(fmt, bias, out_dtype, kernel):
    """Both matmul kernels, in memory (no exported library): the float kernel against x @ W.T, the int8
    kernel against the same with x rounded as it rounds it (`int8_matmul_reference`)."""
    rng = np.random.default_rng(2)
    in_features, out_features = 96, 40
    w = rng.standard_normal((out_features, in_features)).astype(np.float32)
    arrays = Q.quantize(fmt, w)
    b = rng.standard_normal(out_features).astype(out_dtype)
    layer = Q.QuantizedLinear(in_features, out_features, fmt, bias=bias, out_dtype=out_dtype, kernel=kernel)
    vm, names = _build(layer, {
        "forward": {"x": nn.spec.Tensor([1, "seq_len", in_features], "float32")},
        "lookup": {"ids": nn.spec.Tensor(["n"], "int32")},
    })
    assert layer.layout == ("tiles" if kernel == "int8" else "rows")
    values = {**(Q.to_tiles(fmt, arrays) if layer.layout == "tiles" else arrays), "bias": b}
    params = [tvm.runtime.tensor(values[name]) for name in names]
    ref_w = Q.dequantize(fmt, arrays)
    for seq_len in (1, 5, 33):
        x = rng.standard_normal((1, seq_len, in_features)).astype(np.float32)
        y = vm["forward"](tvm.runtime.tensor(x), params).numpy()
        product = (Q.int8_matmul_reference(fmt, x, arrays) if kernel == "int8"
                   else x.astype(np.float64) @ ref_w.T.astype(np.float64))
        expected = product + (b.astype(np.float64) if bias else 0)
        assert y.dtype == np.dtype(out_dtype) and y.shape == (1, seq_len, out_features)
        tol = 1e-4 if out_dtype == "float32" else 2e-2
        np.testing.assert_allclose(y.astype(np.float64), expected, rtol=tol, atol=tol)
    ids = np.array([0, 39, 7, 7], np.int32)
    rows = vm["lookup"](tvm.runtime.tensor(ids), params).numpy()
    np.testing.assert_array_equal(rows, ref_w[ids])


@pytest.mark.parametrize("fmt", Q.FORMATS)
def test_int8_kernel_on_two_dimensional_activations(fmt):
    """Activations of another rank than [d0, d1, K] are viewed as [1, rows, K] around the int8 kernel."""
    rng = np.random.default_rng(4)
    arrays = Q.quantize(fmt, rng.standard_normal((24, 64)).astype(np.float32))
    layer = Q.QuantizedLinear(64, 24, fmt, kernel="int8")
    vm, names = _build(layer, {"forward": {"x": nn.spec.Tensor(["n", 64], "float32")}})
    tiled = Q.to_tiles(fmt, arrays)
    params = [tvm.runtime.tensor(tiled[name]) for name in names]
    for n in (1, 6):
        x = rng.standard_normal((n, 64)).astype(np.float32)
        y = vm["forward"](tvm.runtime.tensor(x), params).numpy()
        assert y.shape == (n, 24)
        np.testing.assert_allclose(y, Q.int8_matmul_reference(fmt, x, arrays), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", Q.FORMATS)
@pytest.mark.parametrize("out_features,in_features", [(16, 32), (40, 96), (33, 576), (3, 64)])
def test_column_tiles_hold_the_blocks_exactly(fmt, out_features, in_features):
    """to_tiles moves bytes only: back to rows (and to GGUF blocks) bit for bit; padding columns are zero;
    element (n, k) sits where kernels/qmatmul.c reads it."""
    rng = np.random.default_rng(out_features)
    arrays = Q.quantize(fmt, rng.standard_normal((out_features, in_features)).astype(np.float32))
    tiled = Q.to_tiles(fmt, arrays)
    for name, (shape, dtype) in Q.tiled_specs(fmt, out_features, in_features).items():
        assert tiled[name].shape == shape and str(tiled[name].dtype) == dtype
    back = Q.from_tiles(fmt, tiled, out_features, in_features)
    for name in arrays:
        np.testing.assert_array_equal(back[name], arrays[name])
    np.testing.assert_array_equal(Q.to_gguf_blocks(fmt, back), Q.to_gguf_blocks(fmt, arrays))
    tiles, groups = tiled["qweight"].shape[0], in_features // 32
    pad = tiles * Q.TILE - out_features
    raw = tiled["qweight"].view(np.uint8)
    if fmt == "q4_1":  # each group's 256 bytes of codes, then its 16 fp16 scales and 16 fp16 minimums
        raw = raw.reshape(tiles, groups, 320)
        code_bytes = raw[..., :256]
        scales, mins = (np.ascontiguousarray(raw[..., lo:lo + 32]).view(np.float16) for lo in (256, 288))
    else:  # pairs of groups: 2 x 512 bytes of codes, then 2 x 16 fp16 scales; an odd last group's partner is zero
        raw = raw.reshape(tiles, -1, 1088)
        code_bytes = raw[..., :1024].reshape(tiles, -1, 512)
        scales = np.ascontiguousarray(raw[..., 1024:]).reshape(tiles, -1, 32).view(np.float16)
        if groups % 2:
            assert not code_bytes[:, groups:].any() and not scales[:, groups:].any()
        mins = None
    if pad:
        assert not scales[-1, :groups, Q.TILE - pad:].any()
    codes = Q.unpack_nibbles(arrays["qweight"]) if fmt == "q4_1" else arrays["qweight"]
    for n, k in ((0, 0), (out_features - 1, in_features - 1), (out_features // 2, 13), (1 % out_features, 36 % in_features)):
        t, c, g, kk = n // 16, n % 16, k // 32, k % 32
        if fmt == "q8_0":
            got = code_bytes[t, g, (kk // 4) * 64 + c * 4 + kk % 4].astype(np.int8)
        else:
            byte = code_bytes[t, g, (kk // 8) * 64 + c * 4 + kk % 8 % 4]
            got = byte >> 4 if kk % 8 >= 4 else byte & 15
            assert mins[t, g, c] == arrays["mins"][n, g], (n, k)
        assert got == codes[n, k], (n, k)
        assert scales[t, g, c] == arrays["scales"][n, g], (n, k)


@pytest.mark.parametrize("fmt", Q.FORMATS)
def test_interleave_gate_up_alternates_whole_tiles(fmt):
    """interleave_gate_up moves whole tiles: gate tile j to 2j, up tile j to 2j + 1, nothing else changes
    (the fused MLP block and the unfused SwiGLU read the matrix this way: test_qblocks, test_tiny_model)."""
    inter, k = 64, 96
    arrays = Q.quantize(fmt, np.random.default_rng(7).standard_normal((2 * inter, k)).astype(np.float32))
    tiled = Q.to_tiles(fmt, arrays)["qweight"]
    stored = Q.interleave_gate_up(tiled)
    assert stored.shape == tiled.shape and stored.dtype == tiled.dtype
    pairs = stored.reshape(inter // Q.TILE, 2, *stored.shape[1:])
    np.testing.assert_array_equal(pairs[:, 0], tiled[: inter // Q.TILE])
    np.testing.assert_array_equal(pairs[:, 1], tiled[inter // Q.TILE:])
    assert Q.gate_up_interleaved(64) and Q.gate_up_interleaved(1536) and not Q.gate_up_interleaved(48)
    with pytest.raises(ValueError, match="odd number of tiles"):
        Q.interleave_gate_up(tiled[:3])
