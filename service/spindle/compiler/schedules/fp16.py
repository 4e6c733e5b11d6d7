"""Rewrites of float16 matmuls so that they read float16 weights once and accumulate in float32.

- `R.matmul(x, R.permute_dims(R.astype(w, "float32")))` (float16 weights, float32 activations) would run
  as two kernels: a cast of the whole weight to a float32 temporary on every call, then the matmul over
  that temporary (three times the weight traffic of the float16 bytes). It becomes one kernel that
  reads `w[n, k]` in float16 and converts each element in registers.
- A float16 `R.matmul` with float16 output (float16 activations) becomes
  `R.astype(R.matmul(x, w, out_dtype="float32"), "float16")`: products are summed in float32, which x86
  does natively, and rounding errors no longer grow with the reduction length.
"""

from __future__ import annotations

import tvm
from tvm import relax, te
from tvm.relax.expr_functor import PyExprMutator, mutator


def _op_name(expr) -> str:
    return expr.op.name if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) else ""


def _matmul_cast_weight_te(x, w):
    """x[..., k] @ float32(w[n, k]).T, one reduction reading the float16 weight."""
    k = te.reduce_axis((0, w.shape[1]), name="k")
    return te.compute(
        (*x.shape[:-1], w.shape[0]),
        lambda *i: te.sum(x[(*i[:-1], k)].astype("float32") * w[i[-1], k].astype("float32"), axis=k),
        name="NT_matmul_f16w",
    )


@mutator
class _Fp16Matmuls(PyExprMutator):  # pylint: disable=abstract-method
    def _binding(self, expr):
        return self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr

    def _cast_weight(self, arg):
        """w if `arg` is permute_dims(astype(w, float32)) of a 2-D float16 w, else None."""
        perm = self._binding(arg)
        if _op_name(perm) != "relax.permute_dims":
            return None
        cast = self._binding(perm.args[0])
        if _op_name(cast) != "relax.astype" or str(cast.attrs.dtype) != "float32":
            return None
        w = cast.args[0]
        ty = getattr(w, "ty", None)
        if str(getattr(ty, "dtype", "")) != "float16" or getattr(ty, "ndim", -1) != 2:
            return None
        axes = perm.attrs.axes
        if axes is not None and [int(a) for a in axes] != [1, 0]:
            return None
        return w

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = self.builder_.normalize(super().visit_call_(call))
        if _op_name(call) != "relax.matmul":
            return call
        x, rhs = call.args
        w = self._cast_weight(rhs)
        x_ty = getattr(x, "ty", None)
        if w is not None and str(getattr(x_ty, "dtype", "")) == "float32" and str(call.attrs.out_dtype) in ("", "void", "None", "float32"):
            return self.builder_.call_te(_matmul_cast_weight_te, x, w, primfunc_name_hint="NT_matmul_f16w")
        if str(getattr(call.ty, "dtype", "")) == "float16" and str(call.attrs.out_dtype) in ("", "void", "None", "float16"):
            acc = self.builder_.normalize(relax.op.matmul(x, rhs, out_dtype="float32"))
            return relax.op.astype(acc, "float16")
        return call


def fp16_matmuls() -> tvm.transform.Pass:
    """Module pass applying the rewrites above to every Relax function, then dropping dead casts."""

    @tvm.transform.module_pass(opt_level=0, name="SpindleFp16Matmuls")
    def _pass(mod: tvm.ir.IRModule, _ctx: tvm.transform.PassContext) -> tvm.ir.IRModule:
        rewriter = _Fp16Matmuls(mod)
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return relax.transform.DeadCodeElimination()(rewriter.builder_.get())

    return _pass
