"""GGUF block-quantized weight formats (q8_0 and q4_1) and the layer that multiplies by them.

Both formats quantize each run of 32 consecutive weights along the input dimension of a `[out, in]`
weight (one GGUF block):

- ``q8_0``: an fp16 scale ``d`` and 32 int8 values ``q``; ``w = d * q`` (8.5 bits per weight).
- ``q4_1``: an fp16 scale ``d``, an fp16 minimum ``m`` and 32 unsigned 4-bit values ``q``;
  ``w = d * q + m`` (5 bits per weight).

Device layout (the parameter arrays of a `QuantizedLinear`, in this order):

| format | ``qweight`` | ``scales`` | ``mins`` |
|---|---|---|---|
| q8_0 | int8 ``[out, in]`` | float16 ``[out, in/32]`` | |
| q4_1 | uint32 ``[out, in/8]``: weight ``k`` in bits ``4*(k%8)..`` of word ``k//8`` | float16 ``[out, in/32]`` | float16 ``[out, in/32]`` |

Scales and minimums keep GGUF's fp16 bits and the 4-bit codes are only repacked, so a GGUF tensor
loads exactly (no second quantization). Layers on the ``int8`` kernel hold the same blocks in column
tiles (``to_tiles``, ``layout="tiles"``): 16 output columns interleaved per group of 32 inputs, as
`kernels/qmatmul.c` describes, with ``out`` padded to a multiple of 16 by zero blocks:

| format | ``qweight`` (the only array) |
|---|---|
| q8_0 | int8 ``[tiles, ceil(in/64), 1088]``: per pair of groups the 512 code bytes of each, then the 16 fp16 scales of each (an odd last group has a zero partner) |
| q4_1 | uint32 ``[tiles, in/32, 80]``: per group 64 words of codes, then the 16 fp16 scales and the 16 fp16 minimums |

so that a tile is one contiguous stream: each group's scales sit next to its codes.
 Both matmul kernels read these arrays directly, so a decode step
streams the quantized bytes, not float32 weights:

- ``int8`` (the default on CPU targets, `kernels/`): the activations are quantized per row to int8 in
  groups of 32 (scale ``max|x| / 127``, as llama.cpp's q8 activations), and each group's product is an
  exact integer dot with the stored codes (AVX-512 VNNI ``vpdpbusd``, or portable C), scaled once per
  group: ``q4_1: y = sum_g dw*dx*dot(code, q) + mw*dx*sum(q)``, ``q8_0: y = sum_g dw*dx*dot(w, q)``.
- ``float`` (``SPINDLE_QMATMUL=float``, and GPU targets): float32 activations times weights dequantized
  in registers (`quantized_matmul_te`, scheduled by `schedules.matmul`).

`quantize_activations` and `int8_matmul_reference` are the numpy references of the int8 kernel.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn

BLOCK_SIZE = 32
FORMATS = ("q8_0", "q4_1")

# GGUF block sizes in bytes: q8_0 = fp16 d + 32 int8; q4_1 = fp16 d + fp16 m + 16 bytes of nibbles.
_BLOCK_BYTES = {"q8_0": 34, "q4_1": 20}


class QuantizationError(ValueError):
    """Bad input to a quantization function; `field` names the offending argument or array."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise QuantizationError("fmt", f"unsupported quantized format {fmt!r}; expected one of {FORMATS}")
    return fmt


def _check_shape(shape, field: str = "shape") -> tuple[int, int]:
    try:
        out_features, in_features = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise QuantizationError(field, f"expected a 2-D shape [out, in], got {shape!r}") from None
    if out_features <= 0 or in_features <= 0:
        raise QuantizationError(field, f"dimensions must be positive, got {shape!r}")
    if in_features % BLOCK_SIZE:
        raise QuantizationError(
            field, f"input dimension {in_features} is not a multiple of the block size {BLOCK_SIZE}"
        )
    return out_features, in_features


def array_specs(fmt: str, out_features: int, in_features: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of the device arrays holding one `[out, in]` weight in `fmt`."""
    _check_format(fmt)
    out_features, in_features = _check_shape((out_features, in_features))
    groups = in_features // BLOCK_SIZE
    if fmt == "q8_0":
        return {
            "qweight": ((out_features, in_features), "int8"),
            "scales": ((out_features, groups), "float16"),
        }
    return {
        "qweight": ((out_features, in_features // 8), "uint32"),
        "scales": ((out_features, groups), "float16"),
        "mins": ((out_features, groups), "float16"),
    }


TILE = 16  # output columns per tile of the "tiles" layout
TILE_Q4_1_WORDS = 80  # uint32 words per tile and group of a q4_1 tile: 64 of codes, 8 of scales, 8 of minimums
TILE_Q8_0_PAIR = 1088  # bytes per tile and pair of groups of a q8_0 tile: 2 x 512 of codes, 2 x 32 of scales
LAYOUTS = ("rows", "tiles")


def tiled_specs(fmt: str, out_features: int, in_features: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of the arrays of one `[out, in]` weight in the column-tile layout."""
    _check_format(fmt)
    out_features, in_features = _check_shape((out_features, in_features))
    tiles, groups = (out_features + TILE - 1) // TILE, in_features // BLOCK_SIZE
    if fmt == "q4_1":  # codes, scales and minimums of a group in one run of 320 bytes
        return {"qweight": ((tiles, groups, TILE_Q4_1_WORDS), "uint32")}
    return {"qweight": ((tiles, (groups + 1) // 2, TILE_Q8_0_PAIR), "int8")}


def layout_specs(fmt: str, out_features: int, in_features: int, layout: str = "rows"):
    if layout not in LAYOUTS:
        raise QuantizationError("layout", f"expected one of {LAYOUTS}, got {layout!r}")
    return (tiled_specs if layout == "tiles" else array_specs)(fmt, out_features, in_features)


def _tile_columns(a: np.ndarray, tiles: int) -> np.ndarray:
    """[out, ...] -> [tiles, 16, ...] with zero rows padding out to a multiple of 16."""
    pad = tiles * TILE - a.shape[0]
    if pad:
        a = np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)], axis=0)
    return a.reshape(tiles, TILE, *a.shape[1:])


def to_tiles(fmt: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Row-layout device arrays -> the column-tile layout (`kernels/qmatmul.c`); exact (bytes moved only)."""
    _check_format(fmt)
    out_features, in_features = _check_arrays(fmt, arrays)
    tiles, groups = (out_features + TILE - 1) // TILE, in_features // BLOCK_SIZE

    def tile_halves(name):  # [out, groups] fp16 -> [tiles, groups, 32 bytes]: a group's 16 columns side by side
        return np.ascontiguousarray(_tile_columns(arrays[name], tiles).transpose(0, 2, 1)).view(np.uint8)

    if fmt == "q4_1":
        codes = _tile_columns(unpack_nibbles(arrays["qweight"]).reshape(out_features, groups, 4, 8), tiles)
        packed = (codes[..., :4] | (codes[..., 4:] << 4)).astype(np.uint8)  # [t, c, g, j, b]
        code_bytes = packed.transpose(0, 2, 3, 1, 4).reshape(tiles, groups, 256)
        qweight = np.concatenate([code_bytes, tile_halves("scales"), tile_halves("mins")], axis=2)
        return {"qweight": np.ascontiguousarray(qweight).view(np.uint32)}
    w = _tile_columns(arrays["qweight"].reshape(out_features, groups, 8, 4), tiles)  # [t, c, g, j, b]
    code_bytes = w.transpose(0, 2, 3, 1, 4).reshape(tiles, groups, 512).view(np.uint8)
    scales = tile_halves("scales")
    if groups % 2:  # a zero partner for the odd last group
        code_bytes = np.concatenate([code_bytes, np.zeros((tiles, 1, 512), np.uint8)], axis=1)
        scales = np.concatenate([scales, np.zeros((tiles, 1, 32), np.uint8)], axis=1)
    pairs = (groups + 1) // 2
    qweight = np.concatenate([code_bytes.reshape(tiles, pairs, 1024), scales.reshape(tiles, pairs, 64)], axis=2)
    return {"qweight": np.ascontiguousarray(qweight).view(np.int8)}


def gate_up_interleaved(inter: int) -> bool:
    """Whether a fused ``gate_up`` projection with ``inter`` gate (and as many up) columns is stored with its
    gate and up tiles interleaved (`interleave_gate_up`) when it is in the tile layout: whenever each group
    of 32 columns of SwiGLU's output is two whole tiles of each."""
    return inter % (2 * TILE) == 0


def interleave_gate_up(qweight: np.ndarray) -> np.ndarray:
    """A tiled ``[gate; up]`` matrix (``to_tiles``' ``qweight``, 2 * inter output columns) with its tiles
    reordered gate 0, up 0, gate 1, up 1, ...: a thread that computes SwiGLU for a range of columns then
    reads one contiguous stream of weights instead of two half a matrix apart. Its output columns come
    in the same order (16 gate columns, the same 16 of up, ...)."""
    tiles = qweight.shape[0]
    if tiles % 2:
        raise ValueError(f"gate_up has an odd number of tiles ({tiles})")
    out = np.empty_like(qweight)
    out[0::2], out[1::2] = qweight[: tiles // 2], qweight[tiles // 2:]
    return out


def from_tiles(fmt: str, arrays: Mapping[str, np.ndarray], out_features: int, in_features: int) -> dict[str, np.ndarray]:
    """Inverse of `to_tiles` (the padding columns dropped)."""
    _check_format(fmt)
    tiles, groups = arrays["qweight"].shape[0], in_features // BLOCK_SIZE

    def rows(halves):  # [tiles, groups, 32 bytes] -> [out, groups] fp16
        a = np.ascontiguousarray(halves).view(np.float16)
        return np.ascontiguousarray(a.transpose(0, 2, 1).reshape(tiles * TILE, groups)[:out_features])

    if fmt == "q4_1":
        group = arrays["qweight"].view(np.uint8).reshape(tiles, groups, 4 * TILE_Q4_1_WORDS)
        packed = group[..., :256].reshape(tiles, groups, 4, TILE, 4).transpose(0, 3, 1, 2, 4)
        codes = np.concatenate([packed & 0x0F, packed >> 4], axis=-1)  # [t, c, g, j, 8]
        codes = codes.reshape(tiles * TILE, groups * BLOCK_SIZE)[:out_features]
        return {"qweight": pack_nibbles(np.ascontiguousarray(codes)), "scales": rows(group[..., 256:288]),
                "mins": rows(group[..., 288:320])}
    raw = arrays["qweight"].view(np.uint8).reshape(tiles, -1, TILE_Q8_0_PAIR)
    codes = raw[..., :1024].reshape(tiles, -1, 512)[:, :groups]
    w = codes.view(np.int8).reshape(tiles, groups, 8, TILE, 4).transpose(0, 3, 1, 2, 4)
    qweight = np.ascontiguousarray(w.reshape(tiles * TILE, groups * BLOCK_SIZE)[:out_features])
    return {"qweight": qweight, "scales": rows(raw[..., 1024:].reshape(tiles, -1, 32)[:, :groups])}


def bits_per_weight(fmt: str) -> float:
    """Bytes read per weight in the device layout, in bits (scales and minimums included)."""
    return {"q8_0": 8.5, "q4_1": 5.0, "float16": 16.0, "float32": 32.0}[fmt]


def _gguf_qtype(fmt: str):
    from gguf import GGMLQuantizationType  # pylint: disable=import-outside-toplevel

    return {"q8_0": GGMLQuantizationType.Q8_0, "q4_1": GGMLQuantizationType.Q4_1}[fmt]


def quantize(fmt: str, w: np.ndarray) -> dict[str, np.ndarray]:
    """Quantize a float `[out, in]` weight exactly as llama.cpp (gguf.quants) does, in the device layout."""
    _check_format(fmt)
    w = np.asarray(w)
    if w.ndim != 2:
        raise QuantizationError("w", f"expected a 2-D [out, in] weight, got shape {w.shape}")
    _check_shape(w.shape, "w")
    if not np.all(np.isfinite(w)):
        raise QuantizationError("w", "weight holds NaN or infinite values")
    from gguf import quants  # pylint: disable=import-outside-toplevel

    raw = quants.quantize(np.ascontiguousarray(w, dtype=np.float32), _gguf_qtype(fmt))
    return from_gguf_blocks(fmt, raw, w.shape)


def from_gguf_blocks(fmt: str, raw: np.ndarray, shape) -> dict[str, np.ndarray]:
    """Convert GGUF blocks (uint8, as `gguf.GGUFReader` returns a tensor's data) to the device layout.

    `shape` is the numpy shape `[out, in]` of the weight (GGUF lists dimensions the other way round).
    The conversion is exact: scales and minimums keep their fp16 bits, 4-bit codes are only repacked.
    """
    _check_format(fmt)
    out_features, in_features = _check_shape(shape)
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raise QuantizationError("raw", f"expected uint8 GGUF block bytes, got dtype {raw.dtype}")
    groups = in_features // BLOCK_SIZE
    expected = out_features * groups * _BLOCK_BYTES[fmt]
    if raw.size != expected:
        raise QuantizationError(
            "raw",
            f"{raw.size} bytes do not hold a {fmt} weight of shape [{out_features}, {in_features}] "
            f"({expected} bytes expected)",
        )
    blocks = np.ascontiguousarray(raw).reshape(out_features, groups, _BLOCK_BYTES[fmt])
    scales = np.ascontiguousarray(blocks[:, :, 0:2]).view(np.float16).reshape(out_features, groups)
    if fmt == "q8_0":
        qweight = np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8).reshape(out_features, in_features)
        return {"qweight": qweight, "scales": scales.copy()}
    mins = np.ascontiguousarray(blocks[:, :, 2:4]).view(np.float16).reshape(out_features, groups)
    nibbles = blocks[:, :, 4:]  # byte j: weight j in the low nibble, weight j + 16 in the high nibble
    codes = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).reshape(out_features, in_features)
    return {"qweight": pack_nibbles(codes), "scales": scales.copy(), "mins": mins.copy()}


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """Pack 4-bit codes `[out, in]` (values 0..15) into uint32 words `[out, in/8]`, code k at bits 4*(k%8)."""
    out_features, in_features = codes.shape
    words = codes.astype(np.uint32).reshape(out_features, in_features // 8, 8)
    shifts = (np.arange(8, dtype=np.uint32) * 4).reshape(1, 1, 8)
    return np.bitwise_or.reduce(words << shifts, axis=-1).astype(np.uint32)


def unpack_nibbles(qweight: np.ndarray) -> np.ndarray:
    """Inverse of `pack_nibbles`: uint32 `[out, in/8]` -> uint8 codes `[out, in]`."""
    shifts = (np.arange(8, dtype=np.uint32) * 4).reshape(1, 1, 8)
    codes = (qweight[:, :, None] >> shifts) & np.uint32(0x0F)
    return codes.reshape(qweight.shape[0], -1).astype(np.uint8)


def _check_arrays(fmt: str, arrays: Mapping[str, np.ndarray]) -> tuple[int, int]:
    if "qweight" not in arrays or "scales" not in arrays:
        raise QuantizationError("arrays", f"a {fmt} weight needs 'qweight' and 'scales' arrays")
    out_features, cols = arrays["qweight"].shape
    in_features = cols * 8 if fmt == "q4_1" else cols
    for name, (shape, dtype) in array_specs(fmt, out_features, in_features).items():
        if name not in arrays:
            raise QuantizationError(f"arrays[{name!r}]", f"missing for format {fmt}")
        got = arrays[name]
        if tuple(got.shape) != shape or str(got.dtype) != dtype:
            raise QuantizationError(
                f"arrays[{name!r}]", f"expected {dtype}{list(shape)}, got {got.dtype}{list(got.shape)}"
            )
    return out_features, in_features


def dequantize(fmt: str, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Reference dequantization of device arrays to a float32 `[out, in]` weight."""
    _check_format(fmt)
    out_features, in_features = _check_arrays(fmt, arrays)
    scales = np.repeat(arrays["scales"].astype(np.float32), BLOCK_SIZE, axis=1)
    if fmt == "q8_0":
        return arrays["qweight"].astype(np.float32) * scales
    mins = np.repeat(arrays["mins"].astype(np.float32), BLOCK_SIZE, axis=1)
    return unpack_nibbles(arrays["qweight"]).astype(np.float32) * scales + mins


def to_gguf_blocks(fmt: str, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Inverse of `from_gguf_blocks`: device arrays -> GGUF block bytes `[out, in/32 * block_bytes]`."""
    _check_format(fmt)
    out_features, in_features = _check_arrays(fmt, arrays)
    groups = in_features // BLOCK_SIZE
    d = arrays["scales"].reshape(out_features, groups, 1).view(np.uint8)
    if fmt == "q8_0":
        qs = arrays["qweight"].reshape(out_features, groups, BLOCK_SIZE).view(np.uint8)
        blocks = np.concatenate([d, qs], axis=-1)
    else:
        m = arrays["mins"].reshape(out_features, groups, 1).view(np.uint8)
        codes = unpack_nibbles(arrays["qweight"]).reshape(out_features, groups, BLOCK_SIZE)
        qs = codes[:, :, :16] | (codes[:, :, 16:] << 4)
        blocks = np.concatenate([d, m, qs], axis=-1)
    return blocks.reshape(out_features, groups * _BLOCK_BYTES[fmt])



def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row int8 quantization of float activations `[..., in]` in groups of 32, as the int8 kernels do.

    Returns `(q, d, s)`: int8 `q[..., in] = rint(x / d)`, float32 `d[..., in/32] = max|x_group| / 127` and
    `s = d * sum(q_group)`, computed in float32 exactly as `kernels/qmatmul.c` does (bit-identical).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-1] % BLOCK_SIZE:
        raise QuantizationError("x", f"last dimension {x.shape[-1]} is not a multiple of {BLOCK_SIZE}")
    groups = x.reshape(*x.shape[:-1], x.shape[-1] // BLOCK_SIZE, BLOCK_SIZE)
    amax = np.abs(groups).max(axis=-1)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.clip(np.rint(groups * inv[..., None]), -127, 127).astype(np.int8)
    s = (d * q.astype(np.int32).sum(axis=-1).astype(np.float32)).astype(np.float32)
    return q.reshape(x.shape), d, s


def int8_matmul_reference(fmt: str, x: np.ndarray, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """float64 `x @ W.T` with x quantized by `quantize_activations`: what the int8 kernels compute.

    q4_1: `sum_g dw*dx*dot(code, q) + mw*s`; q8_0: `sum_g dw*dx*dot(w, q)`, dots per group of 32.
    """
    _check_format(fmt)
    out_features, in_features = _check_arrays(fmt, arrays)
    x = np.asarray(x, dtype=np.float32)
    lead = x.shape[:-1]
    q, d, s = quantize_activations(x.reshape(-1, in_features))
    groups = in_features // BLOCK_SIZE
    codes = unpack_nibbles(arrays["qweight"]) if fmt == "q4_1" else arrays["qweight"]
    dots = np.einsum("rgk,ngk->rng", q.reshape(-1, groups, BLOCK_SIZE).astype(np.float64),
                     codes.reshape(out_features, groups, BLOCK_SIZE).astype(np.float64))
    dw = arrays["scales"].astype(np.float64)
    y = np.einsum("rng,ng,rg->rn", dots, dw, d.astype(np.float64))
    if fmt == "q4_1":
        y += s.astype(np.float64) @ arrays["mins"].astype(np.float64).T
    return y.reshape(*lead, out_features)


# ---------------------------------------------------------------------------------------------------
# Compiled side: TE expressions and the nn layer.


def dequantize_tiles_te(fmt: str, qweight):
    """`dequantize_te` for the column-tile layout (`to_tiles`: the tiles hold the scales and minimums)."""
    _check_format(fmt)

    def q4_1_half(t, g, c, word0):  # the fp16 of column c among the 8 words from word0 of a q4_1 group
        word = qweight[t, g, word0 + c // 2]
        bits = (word >> ((c % 2) * 16).astype("uint32")) & tirx.const(0xFFFF, "uint32")
        return tirx.reinterpret("float16", bits.astype("uint16")).astype("float32")

    def q8_0_scale(t, g, c):  # bytes 1024 + 32 (g % 2) + 2c of the group pair: little-endian fp16
        at = 1024 + (g % 2) * 32 + c * 2
        lo, hi = (qweight[t, g // 2, at + i].astype("uint8").astype("uint16") for i in (0, 1))
        return tirx.reinterpret("float16", lo | (hi << tirx.const(8, "uint16"))).astype("float32")

    def weight(n, k):
        t, c, g, kk = n // TILE, n % TILE, k // BLOCK_SIZE, k % BLOCK_SIZE
        if fmt == "q8_0":
            code = qweight[t, g // 2, (g % 2) * 512 + (kk // 4) * 64 + c * 4 + kk % 4]
            return code.astype("float32") * q8_0_scale(t, g, c)
        e = kk % 8
        word = qweight[t, g, (kk // 8) * TILE + c]
        shift = ((e % 4) * 8 + (e // 4) * 4).astype("uint32")
        code = (word >> shift) & tirx.const(15, "uint32")
        return code.astype("float32") * q4_1_half(t, g, c, 64) + q4_1_half(t, g, c, 72)

    return weight


def dequantize_te(fmt: str, qweight, scales, mins=None):
    """A function (n, k) -> float32 weight element, reading the device arrays (TE tensors) in place."""
    _check_format(fmt)
    if fmt == "q8_0":

        def weight(n, k):
            return qweight[n, k].astype("float32") * scales[n, k // BLOCK_SIZE].astype("float32")

        return weight

    def weight(n, k):
        # The code is masked in place, not shifted down: `word & (15 << 4j)` converts exactly to the float
        # code * 2^(4j), and the scale takes the factor 2^(-4j) (exact, a power of two). Per weight that is
        # one AND and one conversion; the per-lane mask and scale factor are constants of the vector lane.
        lane = k % 8
        code = qweight[n, k // 8] & (tirx.const(15, "uint32") << (lane * 4).astype("uint32"))
        unit = tirx.const(1.0, "float32") / (tirx.const(1, "uint32") << (lane * 4).astype("uint32")).astype("float32")
        group = k // BLOCK_SIZE
        return (code.astype("float32") * (scales[n, group].astype("float32") * unit)
                + mins[n, group].astype("float32"))

    return weight


def quantized_matmul_te(fmt: str, in_features: int, out_features: int, out_dtype: str = "float32"):
    """A TE function (x[..., in], *device arrays) -> x @ dequantize(W).T of shape [..., out].

    The weight is dequantized inside the reduction, so the kernel reads only the quantized bytes;
    products accumulate in float32.
    """
    def compute(x, qweight, scales, mins=None):
        weight = dequantize_te(fmt, qweight, scales, mins)
        # A separate dequantize stage keeps the matmul an einsum for the schedule rules, which inline it
        # back into the reduction; unscheduled builds materialise the float32 weight instead.
        w = te.compute((out_features, in_features), weight, name="dequantize")
        k = te.reduce_axis((0, in_features), name="k")
        lead = list(x.shape[:-1])

        def body(*idx):
            return te.sum(x[(*idx[:-1], k)].astype("float32") * w[idx[-1], k], axis=k)

        acc = te.compute((*lead, out_features), body, name="qmatmul")
        if out_dtype == "float32":
            return acc
        return te.compute(acc.shape, lambda *idx: acc[idx].astype(out_dtype), name="qmatmul_cast")

    return compute


KERNELS = ("int8", "float")
KERNEL_ENV = "SPINDLE_QMATMUL"


def resolve_kernel(kernel: str | None = None) -> str:
    """Which matmul a `QuantizedLinear` emits: `kernel` if given, else `$SPINDLE_QMATMUL`, else by target.

    ``int8`` (the default on CPU targets whose CPU has AVX-512 VNNI): activations quantized to int8 per
    group of 32 and integer dot products with the stored blocks (`kernels/qmatmul.c`, called from a TIR
    PrimFunc; elsewhere it runs as portable C, slower than the float kernel, so it is not the default
    there). ``float``: the dequantize-in-registers float kernel (`quantized_matmul_te`, scheduled by
    `schedules.matmul`); GPU targets always use it. An unset kernel follows the target of the model being
    exported (`_export_target`).
    """
    if kernel is None:
        kernel = os.environ.get(KERNEL_ENV) or None
        if kernel is not None and kernel not in KERNELS:
            raise QuantizationError(KERNEL_ENV, f"expected one of {KERNELS}, got {kernel!r}")
    target = _export_target()
    if target is not None and target.kind.name != "llvm":
        return "float"
    if kernel is None:
        from . import kernels  # pylint: disable=import-outside-toplevel

        kernel = "int8" if kernels.vector_supported() else "float"
    return kernel


def _export_target():
    """The target of the model whose `forward` is being exported, if a caller's `self` carries one.

    `QuantizedLinear` is built without the target (the model factory passes only the format); the
    enclosing `LlamaForCausalLM` holds it as `.target` and is on the call stack while it is exported.
    """
    import inspect  # pylint: disable=import-outside-toplevel

    from tvm.target import Target  # pylint: disable=import-outside-toplevel

    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            target = getattr(owner, "target", None) if isinstance(owner, nn.Module) else None
            if isinstance(target, Target):
                return target
            frame = frame.f_back
        return None
    finally:
        del frame


class QuantizedLinear(nn.Module):  # pylint: disable=too-many-instance-attributes
    """`y = x @ dequantize(W).T (+ bias)` with W held in a GGUF block format (q8_0 or q4_1).

    Parameters are the device arrays of `layout_specs` (rows: `qweight`, `scales`, and `mins` for q4_1;
    tiles: `qweight` alone, which holds the scales and minimums) plus an optional `bias` of `out_dtype`. Fill them with
    `quantize` or `from_gguf_blocks` (and `to_tiles` for the tile layout).
    """

    def __init__(self, in_features: int, out_features: int, fmt: str, bias: bool = False,
                 out_dtype: str = "float32", kernel: str | None = None):
        super().__init__()
        _check_format(fmt)
        if out_dtype not in ("float32", "float16"):
            raise QuantizationError("out_dtype", f"expected float32 or float16, got {out_dtype!r}")
        if kernel is not None and kernel not in KERNELS:
            raise QuantizationError("kernel", f"expected one of {KERNELS}, got {kernel!r}")
        #: The matmul kernel, fixed when the layer is built (it decides the parameters' layout).
        self.kernel = resolve_kernel(kernel)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.fmt = fmt
        self.out_dtype = out_dtype
        #: "tiles" (the int8 kernel's column tiles, `to_tiles`) on the int8 kernel, else "rows".
        self.layout = "tiles" if self.kernel == "int8" else "rows"
        specs = layout_specs(fmt, self.out_features, self.in_features, self.layout)
        self.qweight = nn.Parameter(*specs["qweight"])
        # the tile layout holds its scales and minimums inside `qweight`
        self.scales = nn.Parameter(*specs["scales"]) if "scales" in specs else None
        self.mins = nn.Parameter(*specs["mins"]) if "mins" in specs else None
        self.bias = nn.Parameter((self.out_features,), out_dtype) if bias else None

    def _arrays(self) -> list:
        return [a for a in (self.qweight, self.scales, self.mins) if a is not None]

    def forward(self, x: nn.Tensor, residual: nn.Tensor | None = None) -> nn.Tensor:  # pylint: disable=arguments-differ
        """`x @ W.T (+ bias) (+ residual)`; `residual` has the output's shape.

        The int8 kernel adds a float32 residual as it stores each output (no separate elementwise kernel)
        when there is no bias and the output is float32; otherwise, and on the float kernel, the add is a
        Relax op after the matmul (which the schedule rules fuse into the float kernel). Either way it is
        one float add of the finished matmul output and the residual.
        """
        if x.shape[-1] != self.in_features:
            raise QuantizationError(
                "x", f"last dimension {x.shape[-1]} does not match in_features {self.in_features}"
            )
        if residual is not None and residual.shape[-1] != self.out_features:
            raise QuantizationError(
                "residual", f"last dimension {residual.shape[-1]} does not match out_features {self.out_features}"
            )
        kernel = resolve_kernel(self.kernel)
        if (kernel == "int8") != (self.layout == "tiles"):
            raise QuantizationError("kernel", f"a {self.layout} layer cannot run the {kernel} kernel; build the "
                                              "layer with kernel='int8' for the int8 kernel's column tiles")
        if kernel == "int8":
            if (residual is not None and self.bias is None and self.out_dtype == "float32"
                    and residual.dtype == "float32"):
                return self._int8_matmul(x, residual)
            y = self._int8_matmul(x)
        else:
            y = nn.op.tensor_expr_op(
                quantized_matmul_te(self.fmt, self.in_features, self.out_features, self.out_dtype),
                f"{self.fmt}_matmul",
                [x, *self._arrays()],
            )
        if self.bias is not None:
            y = y + self.bias
        return y if residual is None else y + residual

    def _int8_matmul(self, x: nn.Tensor, residual: nn.Tensor | None = None) -> nn.Tensor:
        """The integer-dot kernel (`kernels.int8_matmul_func`) on x `[d0, d1, in]` (other ranks are viewed so),
        adding a float32 `residual` of the output's shape in the kernel when one is given."""
        from . import kernels  # pylint: disable=import-outside-toplevel

        lead = list(x.shape[:-1])
        if x.dtype != "float32":
            x = x.astype("float32")
        if len(lead) != 2:
            rows = 1
            for dim in lead:
                rows = rows * dim
            x = nn.op.reshape(x, [1, rows, self.in_features])
            if residual is not None:
                residual = nn.op.reshape(residual, [1, rows, self.out_features])
        extra = [] if residual is None else [residual]
        y = nn.op.tensor_ir_op(
            kernels.int8_matmul_func(self.fmt, self.in_features, self.out_features, residual=residual is not None),
            f"{self.fmt}_matmul_int8" + ("_residual" if residual is not None else ""),
            [x, *self._arrays(), *extra],
            nn.Tensor.placeholder([*x.shape[:-1], self.out_features], "float32"),
        )
        if len(lead) != 2:
            y = nn.op.reshape(y, [*lead, self.out_features])
        return y if self.out_dtype == "float32" else y.astype(self.out_dtype)

    def lookup(self, ids: nn.Tensor, dtype: str = "float32") -> nn.Tensor:
        """Dequantized rows `W[ids]` of shape `[len(ids), in]`: an embedding lookup on a tied weight."""

        fmt, in_features = self.fmt, self.in_features

        dequant = dequantize_tiles_te if self.layout == "tiles" else dequantize_te

        def compute(idx, *arrays):
            weight = dequant(fmt, *arrays)
            return te.compute(
                (idx.shape[0], in_features),
                lambda i, k: weight(idx[i], k).astype(dtype),
                name="qembed",
            )

        return nn.op.tensor_expr_op(compute, f"{fmt}_embed", [ids, *self._arrays()])
