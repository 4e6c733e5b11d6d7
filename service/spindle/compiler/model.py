"""A Llama-family decoder in ``tvm.relax.frontend.nn`` exporting the functions of the model artifact.

Covers Llama, Mistral and Qwen2 (``attention_bias``): RMSNorm, RoPE (with the model's theta and
scaling, applied by the paged KV cache), grouped-query attention over ``TIRPagedKVCache``, SwiGLU MLP
and a tied or untied ``lm_head``. Query/key/value and gate/up projections are fused into one matmul
each; the weight loaders fuse the checkpoint's tensors to match (see ``loaders.py``).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from typing import Any, Callable

from tvm import relax as rx
from tvm import te, tirx, topi
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache
from tvm.target import Target

from .attention import CPUPagedKVCache
from .quantization import TILE as TILE_COLUMNS
from .quantization import QuantizedLinear, gate_up_interleaved

MODEL_TYPES = ("llama", "qwen2", "mistral")
ROPE_SCALING_TYPES = ("default", "linear", "llama3", "yarn", "longrope")


@dataclasses.dataclass
class ModelConfig:
    """Dimensions and runtime facts of a Llama-family model (the keys of ``spindle-config.json``)."""

    model_type: str = "llama"
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 0  # 0: hidden_size // num_attention_heads
    intermediate_size: int = 128
    vocab_size: int = 384
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    sliding_window: int = 0  # Mistral: attend to at most this many positions (0: full attention)
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    context_window_size: int = 512
    prefill_chunk_size: int = 512
    max_batch_size: int = 16

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field that is out of range."""
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type: unsupported architecture {self.model_type!r} (supported: {', '.join(MODEL_TYPES)})")
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "head_dim", "intermediate_size", "vocab_size", "context_window_size",
                     "prefill_chunk_size", "max_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_key_value_heads: {self.num_key_value_heads} does not divide "
                f"num_attention_heads {self.num_attention_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim: RoPE needs an even head dimension, got {self.head_dim}")
        if self.rms_norm_eps <= 0:
            raise ValueError(f"rms_norm_eps: expected > 0, got {self.rms_norm_eps}")
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta: expected > 0, got {self.rope_theta}")
        if self.sliding_window is None:
            self.sliding_window = 0
        if not isinstance(self.sliding_window, int) or isinstance(self.sliding_window, bool) or self.sliding_window < 0:
            raise ValueError(f"sliding_window: expected a non-negative integer, got {self.sliding_window!r}")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if kind not in ROPE_SCALING_TYPES:
                raise ValueError(f"rope_scaling: unsupported rope_type {kind!r} "
                                 f"(supported: {', '.join(ROPE_SCALING_TYPES)})")
            if kind == "linear":
                factor = self.rope_scaling.get("factor")
                if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 0:
                    raise ValueError(f"rope_scaling: linear scaling needs a positive factor, got {factor!r}")

    @property
    def effective_sliding_window(self) -> int:
        """The window the attention applies: 0 when there is none or it covers the whole context."""
        w = self.sliding_window
        return w if 0 < w < self.context_window_size else 0

    def rope_parameters(self) -> tuple[float, dict[str, Any]]:
        """``(position scale, scaling dict)`` for TVM's RoPE kernels. Linear scaling (positions divided
        by ``factor``) is the kernels' position scale; the other types are passed on as they are."""
        sc = dict(self.rope_scaling or {})
        if "type" in sc and "rope_type" not in sc:
            sc["rope_type"] = sc.pop("type")
        if sc.get("rope_type") == "linear":
            return 1.0 / float(sc["factor"]), {}
        if sc.get("rope_type") == "default":
            return 1, {}
        return 1, sc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# A factory for linear layers: (in_features, out_features, bias) -> nn.Module with forward(x) -> Tensor.
# The float formats use ``nn.Linear``; quantized formats plug in their layer.
LinearFactory = Callable[[int, int, bool], nn.Module]


_DECODE = contextvars.ContextVar("spindle_decode_tracing", default=False)


@contextlib.contextmanager
def decode_tracing():
    """While ``batch_decode`` is traced: float layers on the CPU use the C decode kernel there."""
    token = _DECODE.set(True)
    try:
        yield
    finally:
        _DECODE.reset(token)


def float_matmul(x: Tensor, weight: Tensor, residual: Tensor | None = None) -> Tensor:
    """``x @ weight.T (+ residual)`` by the C decode kernel (`kernels/fmatmul.c`), in x's dtype."""
    from .kernels import floatmm  # pylint: disable=import-outside-toplevel

    out_features, in_features = (int(d) for d in weight.shape)
    lead = list(x.shape[:-1])
    if len(lead) != 2:
        rows = 1
        for dim in lead:
            rows = rows * dim
        x = op.reshape(x, [1, rows, in_features])
        if residual is not None:
            residual = op.reshape(residual, [1, rows, out_features])
    extra = [] if residual is None else [residual]
    y = op.tensor_ir_op(
        floatmm.float_matmul_func(in_features, out_features, x.dtype, weight.dtype, residual=residual is not None),
        "float_matmul" + ("_residual" if residual is not None else ""), [x, weight, *extra],
        Tensor.placeholder([*x.shape[:-1], out_features], x.dtype))
    return y if len(lead) == 2 else op.reshape(y, [*lead, out_features])


class FloatLinear(nn.Linear):
    """``nn.Linear`` whose ``batch_decode`` matmul is the C decode kernel on the CPU (``kernel="c"``); prefill
    keeps the scheduled TIR GEMM. Same parameters (``weight [out, in]``, ``bias``) as ``nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: str, kernel: str | None):
        super().__init__(in_features, out_features, bias=bias, dtype=dtype)
        self.kernel = kernel

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:  # pylint: disable=arguments-differ
        if self.kernel == "c" and _DECODE.get() and x.dtype == self.weight.dtype:
            y = float_matmul(x, self.weight, residual if self.bias is None else None)
            if self.bias is None:
                return y
            y = y + self.bias
        else:
            y = super().forward(x)
        return y if residual is None else residual + y


def float_linear(dtype: str, kernel: str | None = None) -> LinearFactory:
    def make(in_features: int, out_features: int, bias: bool) -> nn.Module:
        return FloatLinear(in_features, out_features, bias, dtype, kernel)
    return make


def _block_family(m: nn.Module) -> str | None:
    """Which fused decode blocks read the matrix of ``m``: ``"int8"`` for a `QuantizedLinear` on the int8
    kernel's column tiles with float32 output (`kernels.norm_matmul_func`), ``"float"`` for a `FloatLinear`
    on the C decode kernel or a float embedding table used as the output head
    (`kernels.floatmm.float_norm_matmul_func`), else None."""
    if isinstance(m, QuantizedLinear):
        return "int8" if m.layout == "tiles" and m.out_dtype == "float32" else None
    if isinstance(m, FloatLinear):
        return "float" if m.kernel == "c" else None
    return "float" if isinstance(m, nn.Embedding) else None


def _block_matrix(m: nn.Module) -> Tensor:
    """The matrix a fused block reads for ``m``: a `QuantizedLinear`'s tiles (they hold the scales), else
    the float weight ``[out, in]`` (an embedding table ``[vocab, hidden]`` as the output head)."""
    return m.qweight if isinstance(m, QuantizedLinear) else m.weight


def _ahead_spec(ahead: nn.Module | None):
    """What a block's PrimFunc needs to know of the matrix it prefetches: int8 (fmt, in, out), float (in, out)."""
    if ahead is None:
        return None
    if isinstance(ahead, QuantizedLinear):
        return (ahead.fmt, ahead.in_features, ahead.out_features)
    out_features, in_features = (int(d) for d in ahead.weight.shape)
    return (in_features, out_features)


def _rows_placeholder(x: Tensor, n: int, dtype: str, heads: tuple[int, int] | None) -> Tensor:
    """The output of a block over x's rows: ``[d0, d1, n]``, or ``[d0 * d1, *heads]`` (`kernels.rows_shape`)."""
    from .kernels import rows_shape  # pylint: disable=import-outside-toplevel

    return Tensor.placeholder(list(rows_shape(x.shape[0], x.shape[1], n, heads)), dtype)


def norm_linear(norm: nn.RMSNorm, linear: nn.Module, x: Tensor, ahead: nn.Module | None = None,
                heads: tuple[int, int] | None = None) -> Tensor:
    """``rmsnorm(x) @ W.T`` in one fused C block; x is ``[d0, d1, K]``: float32 for an int8-kernel linear
    (`kernels.norm_matmul_func`), the weights' dtype for a float one (`kernels.floatmm.float_norm_matmul_func`;
    ``linear`` may be an embedding table, the tied output head). ``ahead``: the block linear the next VM
    call starts with, whose first bytes the block asks for as it finishes. ``heads`` = (heads, head_dim):
    the result is ``[d0 * d1, heads, head_dim]``, as the KV cache's attention reads its QKV."""
    from .kernels import floatmm, norm_matmul_func  # pylint: disable=import-outside-toplevel

    matrix = _block_matrix(linear)
    args = [x, norm.weight, matrix, _block_matrix(ahead) if ahead is not None else matrix]
    if isinstance(linear, QuantizedLinear):
        func = norm_matmul_func(linear.fmt, linear.in_features, linear.out_features, float(norm.epsilon),
                                _ahead_spec(ahead), heads)
        return op.tensor_ir_op(func, f"norm_{linear.fmt}_matmul", args,
                               _rows_placeholder(x, linear.out_features, "float32", heads))
    out_features, in_features = (int(d) for d in matrix.shape)
    func = floatmm.float_norm_matmul_func(matrix.dtype, in_features, out_features, float(norm.epsilon),
                                          _ahead_spec(ahead), heads)
    return op.tensor_ir_op(func, "norm_float_matmul", args, _rows_placeholder(x, out_features, matrix.dtype, heads))


def _block_call(func, name: str, args: list[Tensor], outs: list[Tensor], into: list[Tensor | None]):
    """Call a fused block whose trailing parameters are its outputs ``outs``. ``into[i]``: a tensor that
    output i overwrites (Relax ``call_tir_inplace``: it is passed as that parameter, and the output is that
    tensor, with no allocation or VM call for it); None: a new tensor. Outputs written in place must come
    before new ones (the new ones are appended to the arguments), so an output after a new one is new too."""
    for i in range(1, len(into)):
        if into[i - 1] is None:
            into[i] = None
    targets = [t for t in into if t is not None]
    out = outs[0] if len(outs) == 1 else outs
    if not targets:
        return op.tensor_ir_op(func, name, args, out)
    indices = [len(args) + i if t is not None else -1 for i, t in enumerate(into)]
    return op.tensor_ir_inplace_op(func, name, [*args, *targets], indices if len(indices) > 1 else indices[0], out)


def mlp_block(a: Tensor, x: Tensor, o_proj: nn.Module, norm: nn.RMSNorm, gate_up: nn.Module, down: nn.Module,
              ahead: nn.Module | None = None, link: tuple[nn.RMSNorm, nn.Module] | None = None,
              a_heads: tuple[int, int] | None = None, z_heads: tuple[int, int] | None = None,
              y_into_x: bool = False, z_into: Tensor | None = None):
    """``x2 + down(swiglu(gate_up(rmsnorm(x2))))`` with ``x2 = x + o_proj(a)``: a decoder layer after its
    attention, in one fused C block (`kernels.mlp_block_func` for int8-kernel linears,
    `kernels.floatmm.float_mlp_block_func` for float ones); ``ahead`` as for `norm_linear`.

    ``link`` = (norm, linear), a linear of the block's family: the same block also computes
    ``rmsnorm(y) @ W.T`` for that norm and linear (the next layer's input norm and QKV, or the final norm
    and the output head) and returns ``(y, z)``; ``ahead`` is then what the VM call after that starts with.

    ``a_heads`` / ``z_heads``: a is / z is to be ``[rows, heads, head_dim]``, as the attention writes and
    reads them (`kernels.rows_shape`). ``y_into_x``: y overwrites x (a tensor nothing reads afterwards);
    ``z_into``: z overwrites that tensor (of z's shape; only together with ``y_into_x``, see `_block_call`)."""
    from .kernels import floatmm, mlp_block_func  # pylint: disable=import-outside-toplevel

    inter = gate_up.out_features // 2
    args = [a, x, _block_matrix(o_proj), norm.weight, _block_matrix(gate_up), _block_matrix(down),
            _block_matrix(ahead if ahead is not None else down)]
    into = [x if y_into_x else None]
    int8 = isinstance(o_proj, QuantizedLinear)  # int8-kernel blocks compute in float32, float ones in x's dtype
    dtype = "float32" if int8 else x.dtype
    if a.dtype != dtype:
        args[0] = a.astype(dtype)
    outs = [Tensor.placeholder(list(x.shape), dtype)]
    spec = None
    if link is not None:
        norm2, linear2 = link
        n2 = _ahead_spec(linear2)[-1]
        spec = (linear2.fmt, n2, float(norm2.epsilon)) if int8 else (n2, float(norm2.epsilon))
        args[6:6] = [norm2.weight, _block_matrix(linear2)]
        outs.append(_rows_placeholder(x, n2, dtype, z_heads))
        into.append(z_into)
    if int8:
        func = mlp_block_func((o_proj.fmt, gate_up.fmt, down.fmt), o_proj.in_features, o_proj.out_features,
                              inter, float(norm.epsilon), _ahead_spec(ahead), link=spec, a_heads=a_heads,
                              z_heads=z_heads)
        return _block_call(func, "mlp_block_link" if link else "mlp_block", args, outs, into)
    func = floatmm.float_mlp_block_func(x.dtype, o_proj.in_features, o_proj.out_features, inter,
                                        float(norm.epsilon), _ahead_spec(ahead), link=spec, a_heads=a_heads,
                                        z_heads=z_heads)
    return _block_call(func, "float_mlp_block_link" if link else "float_mlp_block", args, outs, into)


def project_add(linear: nn.Module, x: Tensor, residual: Tensor) -> Tensor:
    """``residual + linear(x)``: a `QuantizedLinear` or `FloatLinear` takes the residual itself (their C
    kernels add it as they store each output, no separate elementwise kernel); any other layer gets the
    add after it."""
    if isinstance(linear, (QuantizedLinear, FloatLinear)):
        return linear(x, residual=residual)
    return residual + linear(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, linear: LinearFactory):
        self.num_q = cfg.num_attention_heads
        self.num_kv = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        qkv_out = (self.num_q + 2 * self.num_kv) * self.head_dim
        self.qkv_proj = linear(cfg.hidden_size, qkv_out, cfg.attention_bias)
        self.o_proj = linear(self.num_q * self.head_dim, cfg.hidden_size, False)

    def forward(self, x: Tensor, kv: PagedKVCache, layer_id: int, residual: Tensor) -> Tensor:
        """``residual + o_proj(attention(x))``. The cache's fused-QKV attention is called directly on the
        ``[tokens, heads, head_dim]`` views it works on (``PagedKVCache.attention_with_fused_qkv`` adds a
        reshape on each side of it: two more VM reshapes per layer and step)."""
        return project_add(self.o_proj, self.attend(self.qkv_proj(x), kv, layer_id), residual)

    @property
    def qkv_heads(self) -> tuple[int, int]:
        """(heads, head_dim) of the fused QKV as the KV cache's attention reads it."""
        return (self.num_q + 2 * self.num_kv, self.head_dim)

    @property
    def out_heads(self) -> tuple[int, int]:
        """(heads, head_dim) of the attention's output."""
        return (self.num_q, self.head_dim)

    def attend(self, qkv: Tensor, kv: PagedKVCache, layer_id: int, heads: bool = False) -> Tensor:
        """The cache's attention of the fused ``qkv [b, s, (q + 2 kv) * head_dim]``: ``[b, s, q * head_dim]``.
        ``heads``: qkv is already ``[b * s, q + 2 kv, head_dim]`` and the result is ``[b * s, q, head_dim]``,
        the views the cache works on (no VM reshape on either side; the fused blocks read and write them)."""
        bb = rx.BlockBuilder.current()
        # The float scale is one VM computation per use: bind it once per function, on the first layer.
        scale = getattr(kv, "_spindle_sm_scale", None)
        if scale is None:
            scale = bb.emit(rx.prim_value(self.head_dim ** -0.5))
            kv._spindle_sm_scale = scale  # pylint: disable=protected-access
        if heads:
            rows = qkv.shape[0]
        else:
            b, s, _ = qkv.shape
            rows = b * s
            qkv = op.reshape(qkv, (rows, *self.qkv_heads))
        out = Tensor(_expr=bb.emit(rx.call_dps_packed(
            "vm.builtin.attention_kv_cache_attention_with_fused_qkv",
            [kv._expr, rx.prim_value(layer_id), scale, qkv._expr],  # pylint: disable=protected-access
            out_ty=rx.TensorType((rows, *self.out_heads), qkv.dtype))))
        return out if heads else op.reshape(out, (b, s, self.num_q * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, linear: LinearFactory):
        self.inter = cfg.intermediate_size
        self.gate_up_proj = linear(cfg.hidden_size, 2 * cfg.intermediate_size, False)
        self.down_proj = linear(cfg.intermediate_size, cfg.hidden_size, False)
        #: gate_up's gate and up tiles alternate (`quantization.interleave_gate_up`, done by the weight
        #: conversion for the tile layout), and so do its output columns, 16 at a time.
        self.interleaved = (isinstance(self.gate_up_proj, QuantizedLinear) and self.gate_up_proj.layout == "tiles"
                            and gate_up_interleaved(self.inter))

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        """``residual + down_proj(swiglu(gate_up_proj(x)))``."""
        gate_up = self.gate_up_proj(x)
        swiglu = functools.partial(swiglu_te, interleaved=self.interleaved)
        return project_add(self.down_proj, op.tensor_expr_op(swiglu, "swiglu", [gate_up]), residual)


def swiglu_te(gate_up: te.Tensor, interleaved: bool = False) -> te.Tensor:
    """``silu(gate) * up`` of the fused ``[..., 2 * inter]`` projection, computed in float32 with TVM's
    polynomial ``fast_exp`` (vectorises; within ~1.5e-7 relative of ``exp``, which is a scalar libm
    call per element on the CPU). Its columns are ``[gate, up]``, or with ``interleaved`` 16 gate columns,
    the same 16 of up, the next 16 of gate, ..."""
    inter = gate_up.shape[-1] // 2
    shape = (*gate_up.shape[:-1], inter)
    if interleaved:
        def gate_col(c):
            return (c // TILE_COLUMNS) * (2 * TILE_COLUMNS) + c % TILE_COLUMNS

        def up_col(c):
            return gate_col(c) + TILE_COLUMNS
    else:
        def gate_col(c):
            return c

        def up_col(c):
            return c + inter
    gate = te.compute(shape, lambda *i: gate_up[(*i[:-1], gate_col(i[-1]))].astype("float32"), name="gate")
    neg_exp = topi.fast_exp(te.compute(shape, lambda *i: -gate[i], name="neg_gate"))
    return te.compute(shape, lambda *i: (gate[i] / (tirx.const(1, "float32") + neg_exp[i])
                                         * gate_up[(*i[:-1], up_col(i[-1]))].astype("float32")).astype(gate_up.dtype),
                      name="swiglu")


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, linear: LinearFactory, dtype: str):
        self.input_layernorm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=dtype)
        self.self_attn = Attention(cfg, linear)
        self.post_attention_layernorm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=dtype)
        self.mlp = MLP(cfg, linear)
        #: Decode with the fused C blocks where the layer allows it (`fused_blocks`).
        self.fused = False

    def forward(self, x: Tensor, kv: PagedKVCache, layer_id: int, ahead: nn.Module | None = None,
                qkv: Tensor | None = None, link: tuple[nn.RMSNorm, nn.Module, tuple[int, int] | None] | None = None,
                in_place: bool = False):
        """``ahead``: in fused decode, the block linear the next layer (or the output head) starts
        with, which this layer's last block asks the memory for as it finishes. ``qkv``: this layer's
        QKV projection when the previous layer's block computed it (``link``); ``link`` = (norm, linear,
        heads of its output or None): see `mlp_block` (the layer then returns ``(y, z)``). ``in_place``:
        the layer's output may overwrite x (and a linked z this layer's QKV): x is an intermediate of the
        step, not the function's input."""
        if _DECODE.get() and self.fused_blocks():
            return self._fused_forward(x, kv, layer_id, ahead, qkv, link, in_place)
        x = self.self_attn(self.input_layernorm(x), kv, layer_id, residual=x)
        return self.mlp(self.post_attention_layernorm(x), residual=x)

    def fused_blocks(self) -> bool:
        """Whether ``batch_decode`` runs this layer as two fused C blocks around its attention: linears
        that one family of blocks reads (`_block_family`), no bias after the attention, and

        - int8-kernel linears (`kernels.norm_matmul_func`, `kernels.mlp_block_func`): float32 norms and
          gate_up stored interleaved (`MLP.interleaved`: an intermediate size that is a multiple of 32);
        - float linears (`kernels.floatmm`): norms in the weights' dtype."""
        return self.block_family() is not None

    def block_family(self) -> str | None:
        """``"int8"`` or ``"float"``: the fused blocks this layer's decode runs (see `fused_blocks`), or None."""
        attn, mlp = self.self_attn, self.mlp
        linears = (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj)
        families = {_block_family(m) for m in linears}
        if not self.fused or len(families) != 1 or any(m.bias is not None for m in linears[1:]):
            return None
        family = families.pop()
        norms = (self.input_layernorm.weight.dtype, self.post_attention_layernorm.weight.dtype)
        if family == "int8" and mlp.interleaved and norms == ("float32", "float32"):
            return family
        if family == "float" and norms == (attn.qkv_proj.weight.dtype,) * 2:
            return family
        return None

    def fused_input(self) -> nn.Module | None:
        """The linear a fused layer's first block multiplies by (its QKV when no bias splits the norm off)."""
        return self.self_attn.qkv_proj if self.fused_blocks() and self.self_attn.qkv_proj.bias is None else None

    def _fused_forward(self, x: Tensor, kv: PagedKVCache, layer_id: int, ahead: nn.Module | None,
                       qkv: Tensor | None, link: tuple[nn.RMSNorm, nn.Module, tuple[int, int] | None] | None,
                       in_place: bool):
        """The blocks read and write the attention's ``[rows, heads, head_dim]`` views, and the MLP block
        writes over x (and a linked QKV over this layer's) where ``in_place`` allows: per layer the VM then
        runs the two calls and the attention's output allocation, no reshapes."""
        attn, mlp = self.self_attn, self.mlp
        if self.block_family() == "int8" and x.dtype != "float32":
            x = x.astype("float32")
        if qkv is None and attn.qkv_proj.bias is None:  # the attention between the blocks reads its keys through L1
            qkv = norm_linear(self.input_layernorm, attn.qkv_proj, x, ahead=attn.o_proj, heads=attn.qkv_heads)
        elif qkv is None:  # Qwen2's qkv bias: the norm and the matmul stay apart
            qkv = attn.qkv_proj(self.input_layernorm(x))
        heads = int(qkv.shape[-1]) == attn.head_dim  # the blocks' layout (else the flat [b, 1, n] of a Linear)
        a = attn.attend(qkv, kv, layer_id, heads=heads)
        z_heads = link[2] if link is not None else None
        z_into = qkv if in_place and heads and z_heads == attn.qkv_heads else None
        return mlp_block(a, x, attn.o_proj, self.post_attention_layernorm, mlp.gate_up_proj, mlp.down_proj, ahead,
                         link[:2] if link is not None else None, a_heads=attn.out_heads if heads else None,
                         z_heads=z_heads, y_into_x=in_place, z_into=z_into)


class LlamaForCausalLM(nn.Module):  # pylint: disable=too-many-instance-attributes
    """The decoder with the four exported functions of the artifact (docs/design.md, section 1).

    ``attention_kernels`` picks the CPU attention: ``"spindle"`` (``attention.py``, the default) or
    ``"tvm"`` (TVM's bundled single-threaded kernels, kept for side-by-side benchmarks; no sliding
    window)."""

    attention_kernels = "spindle"

    def __init__(self, cfg: ModelConfig, target: Target, dtype: str = "float32",
                 linear: LinearFactory | None = None, embedding: nn.Module | None = None,
                 lm_head: nn.Module | None = None, float_kernel: str | None = None, fused_blocks: bool = False):
        self.cfg = cfg
        self.target = target
        self.dtype = dtype
        #: "c": float layers (and a tied output head) use the C decode kernel; None: TVM's kernels only.
        self.float_kernel = float_kernel if target.kind.name == "llvm" else None
        linear = linear or float_linear(dtype, self.float_kernel)
        self.embed_tokens = embedding if embedding is not None else nn.Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype)
        self.layers = nn.ModuleList([DecoderLayer(cfg, linear, dtype) for _ in range(cfg.num_hidden_layers)])
        #: Decode runs each layer as fused C blocks where it can (``DecoderLayer.fused_blocks``), with the
        #: final norm folded into the output head; CPU only.
        self.fused_blocks = bool(fused_blocks) and target.kind.name == "llvm"
        for layer in self.layers:
            layer.fused = self.fused_blocks
        self.norm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=dtype)
        if cfg.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = lm_head if lm_head is not None else linear(cfg.hidden_size, cfg.vocab_size, False)

    # -- building blocks -------------------------------------------------------------------------
    def _logits(self, h: Tensor) -> Tensor:
        if self.lm_head is None:
            if isinstance(self.embed_tokens, nn.Embedding) and self.float_kernel == "c":
                logits = float_matmul(h, self.embed_tokens.weight)  # a few rows: the decode kernel's case
            elif isinstance(self.embed_tokens, nn.Embedding):
                logits = op.matmul(h, op.permute_dims(self.embed_tokens.weight))
            else:  # a quantized table: its forward is the matmul by the table
                logits = self.embed_tokens(h)
        elif isinstance(self.lm_head, FloatLinear):
            with decode_tracing():  # a few rows in prefill too (the last position of each sequence)
                logits = self.lm_head(h)
        else:
            logits = self.lm_head(h)
        if logits.dtype != "float32":
            logits = logits.astype("float32")
        return logits

    def _decoder(self, h: Tensor, kv: PagedKVCache) -> Tensor:
        for i, layer in enumerate(self.layers):
            h = layer(h, kv, i)
        return self.norm(h)

    # -- exported functions ----------------------------------------------------------------------
    def embed(self, input_ids: Tensor) -> Tensor:
        if isinstance(self.embed_tokens, nn.Embedding):
            return self.embed_tokens(input_ids)
        return self.embed_tokens.lookup(input_ids, self.dtype)

    def batch_prefill(self, input_embeds: Tensor, logit_positions: Tensor, kv: PagedKVCache):
        h = self._decoder(input_embeds, kv)
        h = op.take(h, logit_positions, axis=1)
        return self._logits(h), kv

    def batch_decode(self, input_embeds: Tensor, kv: PagedKVCache):
        head = self._fused_head()
        with decode_tracing():
            if head is None:
                return self._logits(self._decoder(input_embeds, kv)), kv
            # the final norm folded into the output head's block; each MLP block links to the
            # next layer's first block (or the head), one block per layer around its attention
            h, z, n = input_embeds, None, len(self.layers)
            for i, layer in enumerate(self.layers):
                link = self._link(i, head)
                # the first layer's x is the function's input (the caller's embeddings): not overwritten
                if link is None:
                    nxt = self.layers[i + 1].fused_input() if i + 1 < n else head
                    h, z = layer(h, kv, i, nxt, qkv=z, in_place=i > 0), None
                else:
                    ahead = self.layers[i + 1].self_attn.o_proj if i + 1 < n else None
                    h, z = layer(h, kv, i, ahead, qkv=z, link=link, in_place=i > 0)
            if z is None:
                if _block_family(head) == "int8" and h.dtype != "float32":
                    h = h.astype("float32")
                z = norm_linear(self.norm, head, h)
            return (z if z.dtype == "float32" else z.astype("float32")), kv

    def _link(self, i: int, head: nn.Module) -> tuple[nn.RMSNorm, nn.Module, tuple[int, int] | None] | None:
        """What layer ``i``'s MLP block also computes in fused decode (`mlp_block`'s ``link``): the next
        layer's input norm and QKV (with the heads its attention reads), or after the last layer the final
        norm and the output head (None: flat logits), where both are blocks of one family; None otherwise."""
        family = self.layers[i].block_family()
        if family is None:
            return None
        if i + 1 < len(self.layers):
            nxt = self.layers[i + 1]
            qkv = nxt.fused_input()
            if qkv is None or nxt.block_family() != family:
                return None
            return (nxt.input_layernorm, qkv, nxt.self_attn.qkv_heads)
        return (self.norm, head, None) if _block_family(head) == family else None

    def _fused_head(self) -> nn.Module | None:
        """The output head when decode folds the final norm into it (fused blocks; a head without bias that
        a family of blocks reads: an int8-kernel head after a float32 norm, or a float head or tied
        embedding table on the C decode kernel in the norm's dtype)."""
        if not self.fused_blocks:
            return None
        head = self.embed_tokens if self.lm_head is None else self.lm_head
        family = _block_family(head)
        if family is None or getattr(head, "bias", None) is not None:
            return None
        if family == "int8":
            return head if self.norm.weight.dtype == "float32" else None
        return head if self.float_kernel == "c" and head.weight.dtype == self.norm.weight.dtype else None

    def create_paged_kv_cache(self, max_batch_size: tirx.Var, max_total_seq_len: tirx.Var,
                              prefill_chunk_size: tirx.Var, page_size: tirx.Var,
                              support_sliding_window: tirx.Var) -> PagedKVCache:
        """The paged KV cache. On the CPU it runs Spindle's attention kernels (``attention.py``), which
        also apply Mistral's sliding window; ``support_sliding_window`` (TVM's own window mode, which
        the engine leaves off) is accepted for the calling convention and not used there."""
        cfg = self.cfg
        rope_scale, rope_scaling = cfg.rope_parameters()
        if self.target.kind.name == "llvm" and self.attention_kernels == "spindle":
            return CPUPagedKVCache(
                max_batch_size=max_batch_size, max_total_seq_len=max_total_seq_len,
                prefill_chunk_size=prefill_chunk_size, page_size=page_size,
                num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, rope_theta=cfg.rope_theta,
                rope_scale=rope_scale, rope_scaling=rope_scaling, dtype=self.dtype, target=self.target,
                sliding_window=cfg.effective_sliding_window)
        if cfg.effective_sliding_window:
            raise ValueError(f"sliding_window: a window of {cfg.sliding_window} below the context window "
                             f"({cfg.context_window_size}) is applied by Spindle's CPU attention kernels only "
                             f"(llvm target); compile for llvm or cap --context-window-size at {cfg.sliding_window}")
        return TIRPagedKVCache(
            attn_kind="mha",
            max_batch_size=max_batch_size,
            max_total_seq_len=max_total_seq_len,
            prefill_chunk_size=prefill_chunk_size,
            page_size=page_size,
            support_sliding_window=support_sliding_window,
            layer_partition=rx.ShapeExpr([0, cfg.num_hidden_layers]),
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads,
            qk_head_dim=cfg.head_dim,
            v_head_dim=cfg.head_dim,
            mla_original_qk_head_dim=0,
            mla_original_v_head_dim=0,
            rope_mode=RopeMode.NORMAL,
            rope_scale=rope_scale,
            rope_theta=cfg.rope_theta,
            rope_scaling=rope_scaling,
            rope_ext_factors=rx.prim_value(0),
            rotary_dim=cfg.head_dim,
            enable_disaggregation=False,
            dtype=self.dtype,
            target=self.target,
        )

    def get_default_spec(self) -> nn.spec.ModuleSpec:
        hidden, dt = self.cfg.hidden_size, self.dtype
        packed = {"param_mode": "packed", "effect_mode": "none"}
        spec = {
            "embed": {"input_ids": nn.spec.Tensor(["seq_len"], "int32"), "$": packed},
            "batch_prefill": {
                "input_embeds": nn.spec.Tensor([1, "seq_len", hidden], dt),
                "logit_positions": nn.spec.Tensor(["batch_size"], "int32"),
                "kv": nn.spec.Object(object_type=PagedKVCache),
                "$": packed,
            },
            "batch_decode": {
                "input_embeds": nn.spec.Tensor(["batch_size", 1, hidden], dt),
                "kv": nn.spec.Object(object_type=PagedKVCache),
                "$": packed,
            },
            "create_paged_kv_cache": {
                "max_batch_size": int,
                "max_total_seq_len": int,
                "prefill_chunk_size": int,
                "page_size": int,
                "support_sliding_window": int,
                "$": {"param_mode": "none", "effect_mode": "none"},
            },
        }
        return nn.spec.ModuleSpec.from_raw(spec, self)


def rope_inv_freq(cfg: ModelConfig) -> "list[float]":
    """Inverse RoPE frequencies (used by the numpy reference in tests)."""
    d = cfg.head_dim
    return [1.0 / (cfg.rope_theta ** (2 * i / d)) for i in range(d // 2)]

