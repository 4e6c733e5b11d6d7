"""The Relax pipeline for the CPU, with Spindle's schedule rules applied after operator fusion."""

from __future__ import annotations

import tvm
from tvm import relax, tirx
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from .fp16 import fp16_matmuls


def schedule_rules() -> list:
    """The ordered CPU schedule rules; the first rule that accepts a kernel schedules it."""
    from .rules import default_rules  # pylint: disable=import-outside-toplevel

    return default_rules()


def apply_schedules(rules: list | None = None) -> tvm.transform.Pass:
    """A module pass applying `rules` (default: `schedule_rules()`) to every unscheduled PrimFunc.

    A rule returns a `tvm.s_tir.Schedule`, or a finished `PrimFunc` (for kernels with several scheduled
    variants behind a runtime branch), or None when it does not apply.
    """
    rules = schedule_rules() if rules is None else rules

    @tvm.transform.module_pass(opt_level=0, name="SpindleApplySchedules")
    def _apply(mod: tvm.ir.IRModule, _ctx: tvm.transform.PassContext) -> tvm.ir.IRModule:
        target = tvm.target.Target.current(allow_none=False)
        updated = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or (func.attrs and func.attrs.get("tirx.is_scheduled")):
                continue
            func_target = func.attrs.get("target", target) if func.attrs else target
            for rule in rules:
                result = rule.apply(func, func_target, False)
                if result is None:
                    continue
                if isinstance(result, (list, tuple)):
                    result = result[0]
                scheduled = result if isinstance(result, tirx.PrimFunc) else result.mod["main"]
                updated[gvar] = scheduled.with_attr("tirx.is_scheduled", True)
                break
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod

    return _apply


def cpu_pipeline(target: tvm.target.Target, schedule: bool = True) -> tvm.transform.Pass:
    """The Relax pipeline for `tvm.compile(mod, target, relax_pipeline=cpu_pipeline(target))`.

    With `schedule=False` it is TVM's generic CPU pipeline (unscheduled kernels, for reference tests).
    """
    target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target

    @tvm.transform.module_pass(opt_level=0, name="SpindleCPUPipeline")
    def _pipeline(mod: tvm.ir.IRModule, _ctx: tvm.transform.PassContext) -> tvm.ir.IRModule:
        passes = [fp16_matmuls()] if schedule else []
        # x @ W.T stays one matmul reading W[n, k] instead of transposing the weight on every call.
        passes.append(relax.transform.FuseTransposeMatmul())
        passes += list(cpu_generic.library_dispatch_passes(target))
        passes += list(cpu_generic.legalize_passes(target))
        if schedule:
            passes.append(relax.transform.DeadCodeElimination())
            passes.append(apply_schedules())
        passes += list(cpu_generic.dataflow_lower_passes(target))
        # Without KillAfterLastUse: its register kills are a VM call each (about 18 per layer and decode
        # step); every intermediate tensor is a view of statically planned storage, so releasing the
        # views early frees no memory.
        for p in cpu_generic.finalize_passes(target):
            if p.info.name == "KillAfterLastUse":
                passes += [relax.transform.CanonicalizeBindings(), drop_unused_tuples()]
                continue
            passes.append(p)
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


@relax.expr_functor.visitor
class _VarUses(relax.PyExprVisitor):  # pylint: disable=abstract-method
    def __init__(self):
        super().__init__()
        self.used: set = set()

    def visit_var_(self, op: relax.Var) -> None:  # pylint: disable=arguments-renamed
        self.used.add(op)

    def visit_dataflow_var_(self, op: relax.DataflowVar) -> None:  # pylint: disable=arguments-renamed
        self.used.add(op)


@relax.expr_functor.mutator
class _DropTuples(relax.PyExprMutator):  # pylint: disable=abstract-method
    def __init__(self, used: set):
        super().__init__()
        self.used = used

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if isinstance(binding.value, relax.Tuple) and binding.var not in self.used:
            return
        super().visit_var_binding_(binding)


def drop_unused_tuples() -> tvm.transform.Pass:
    """Drop bindings of tuples nothing reads. A kernel call with two outputs leaves one behind once its
    outputs are read directly (CanonicalizeBindings): a `vm.builtin.make_tuple` call per fused decode
    layer and step that builds an object no one uses."""

    @tvm.transform.module_pass(opt_level=0, name="SpindleDropUnusedTuples")
    def _drop(mod: tvm.ir.IRModule, _ctx: tvm.transform.PassContext) -> tvm.ir.IRModule:
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, relax.Function):
                continue
            uses = _VarUses()
            uses.visit_expr(func)
            mod[gvar] = _DropTuples(uses.used).visit_expr(func)
        return mod

    return _drop
